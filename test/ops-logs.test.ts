import { sql } from 'drizzle-orm';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import { connect, signUp, wsUrl } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { expectCode } from './support/errors.js';

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  // Everything a level can produce, so a secret hidden in a debug line is caught too. Without
  // the refresh-token reuse grace, so that the reuse below is one at once.
  app = await deployment.start({ logLevel: 'trace', jwt: { refreshReuseGraceMs: 0 } });
});
afterAll(async () => {
  await deployment?.cleanup();
});

function parsedLines(): Record<string, unknown>[] {
  return deployment.logLines.map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe(`logs (${engineLabel})`, () => {
  it('writes one JSON line per call with its request id and user id, never its input', async () => {
    const ada = await signUp(app.url);
    await ada.api.auth.me.query();
    const lines = parsedLines();
    const me = lines.find((line) => line.procedure === 'auth.me' && line.userId === ada.user.id);
    expect(me).toMatchObject({ msg: 'call', type: 'query', code: 'OK', service: 'parley' });
    expect(me?.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(typeof me?.ms).toBe('number');
    const register = lines.find((line) => line.procedure === 'auth.register');
    expect(register).toMatchObject({ code: 'OK' });
    expect(register).not.toHaveProperty('input');
    // Request ids are per request.
    const ids = lines.filter((line) => line.msg === 'call').map((line) => line.requestId);
    expect(new Set(ids).size).toBe(ids.length);
    await ada.close();
  });

  it('never writes a password, token or signing secret, whatever the traffic', async () => {
    const secrets: string[] = [deployment.jwtSecret];
    const ada = await signUp(app.url);
    secrets.push(ada.password, ada.tokens.accessToken, ada.tokens.refreshToken);
    const anonymous = connect(app.url);

    // Logins that work and logins that fail.
    const login = await anonymous.api.auth.login.mutate({
      username: ada.user.username,
      password: ada.password,
    });
    secrets.push(login.tokens.accessToken, login.tokens.refreshToken);
    const wrongPassword = 'wrong-horse-battery-staple';
    secrets.push(wrongPassword);
    await expectCode(
      anonymous.api.auth.login.mutate({ username: ada.user.username, password: wrongPassword }),
      'UNAUTHORIZED',
    );

    // Rotation, then reuse of a rotated token (which logs a warning about the session).
    const { tokens: rotated } = await anonymous.api.auth.refresh.mutate({
      refreshToken: login.tokens.refreshToken,
    });
    secrets.push(rotated.accessToken, rotated.refreshToken);
    await expectCode(
      anonymous.api.auth.refresh.mutate({ refreshToken: login.tokens.refreshToken }),
      'UNAUTHORIZED',
    );
    expect(deployment.logLines.some((line) => line.includes('rotated refresh token reused'))).toBe(true);

    // A password change carries two passwords.
    const newPassword = 'another correct horse';
    secrets.push(newPassword);
    await ada.api.user.update.mutate({ password: newPassword, currentPassword: ada.password });

    // A token in the WebSocket URL and a forged bearer token.
    const socket = new WebSocket(`${wsUrl(app.url)}?token=${encodeURIComponent(ada.tokens.accessToken)}`);
    await new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    });
    socket.close();
    const forged = `${ada.tokens.accessToken.slice(0, -4)}AAAA`;
    secrets.push(forged);
    await expectCode(connect(app.url, forged).api.auth.me.query(), 'UNAUTHORIZED');

    // A failed query whose bound parameter is a secret, logged the way the server logs errors.
    const bound = 'query-parameter-secret-0123456789';
    secrets.push(bound);
    const failure = await app.services.db.execute(sql`select ${bound}::int`).then(
      () => null,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(Error);
    expect(String((failure as Error).message)).toContain(bound);
    app.services.log.error({ err: failure }, 'query failed');

    // Fields named like secrets, and a URL with credentials inside an error message.
    app.services.log.info(
      {
        password: 'field-password-secret',
        tokens: { accessToken: 'field-access-secret', refreshToken: 'field-refresh-secret' },
        headers: { authorization: 'Bearer field-header-secret' },
        config: { jwt: { secret: 'field-jwt-secret' } },
      },
      'fields that must be redacted',
    );
    app.services.log.warn(
      { err: new Error('cannot reach postgres://parley:url-password-secret@db:5432/parley') },
      'connection failed',
    );
    secrets.push(
      'field-password-secret',
      'field-access-secret',
      'field-refresh-secret',
      'field-header-secret',
      'field-jwt-secret',
      'url-password-secret',
    );
    await anonymous.close();
    await ada.close();

    const lines = deployment.logLines;
    // The traffic above was logged (so the check below looks at something).
    expect(lines.length).toBeGreaterThan(10);
    expect(lines.some((line) => line.includes('query failed') && line.includes('params: [redacted]'))).toBe(
      true,
    );
    expect(lines.some((line) => line.includes('postgres://parley:[redacted]@db'))).toBe(true);
    expect(
      lines.some((line) => line.includes('fields that must be redacted') && line.includes('[redacted]')),
    ).toBe(true);
    for (const secret of secrets) {
      expect(secret.length).toBeGreaterThan(8);
      const leaking = lines.filter((line) => line.includes(secret));
      expect(leaking, `a log line contains ${secret.slice(0, 6)}…`).toEqual([]);
    }
  });

  it('has a suite-wide check, run by every test file, that recognises leaked tokens', async () => {
    const ada = await signUp(app.url);
    const probe = await TestDeployment.create();
    try {
      probe.logLines.push('{"msg":"fine"}', `{"msg":"oops","token":"${ada.tokens.accessToken}"}`);
      probe.logLines.push(`{"msg":"oops","secret":"${probe.jwtSecret}"}`);
      expect(probe.leakedSecrets()).toHaveLength(2);
      expect(deployment.leakedSecrets()).toEqual([]);
    } finally {
      probe.logLines.length = 0;
      await probe.cleanup();
      await ada.close();
    }
  });
});
