import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import superjson from 'superjson';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Message } from '../../server/src/contracts/schemas.js';
import type { AppRouter } from '../../server/src/routers/_app.js';
import { signUp, type TestClient, wsUrl } from '../support/client.js';
import { tap } from '../support/events.js';
import { oracle, Scenario } from './harness.js';
import { ParleyProcess } from './processes.js';

const scenarios: Scenario[] = [];
const processes: ParleyProcess[] = [];
afterEach(async () => {
  await Promise.all(processes.splice(0).map((p) => p.kill()));
  for (const scenario of scenarios.splice(0)) await scenario.close();
});

/** A device that talks to whichever instance `target()` names, as behind a load balancer. */
function device(target: () => string, token: string): TestClient {
  const wsClient = createWSClient({
    url: () => wsUrl(target()),
    WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
    connectionParams: () => ({ token }),
    retryDelayMs: () => 200,
  });
  // Everything over the WebSocket, so every call follows the device to its new instance.
  const client = createTRPCClient<AppRouter>({
    links: [wsLink<AppRouter>({ client: wsClient, transformer: superjson })],
  });
  return {
    api: client,
    ws: client,
    token,
    close: () => wsClient.close(),
  };
}

describe('API instance killed', () => {
  it('SIGKILLed with clients connected: they resume on another instance with no gap and no duplicate', async () => {
    const scenario = await Scenario.create({ ownRedisDb: true });
    scenarios.push(scenario);
    const env = {
      DATABASE_URL: scenario.deployment.databaseUrl ?? '',
      REDIS_URL: scenario.redisUrl,
      JWT_SECRET: scenario.deployment.jwtSecret,
      PORT: '0',
      HOST: '127.0.0.1',
      PARLEY_WORKER: 'off',
    };
    const [a, b] = [ParleyProcess.spawn('start', env), ParleyProcess.spawn('start', env)];
    processes.push(a, b);
    const [urlA, urlB] = await Promise.all([a.url, b.url]);
    // This instance runs the persistence worker and is where the sender's calls go.
    const home = await scenario.deployment.start({ redisUrl: scenario.redisUrl, redisPrefix: '' });
    const [al, bo] = await Promise.all([signUp(home.url), signUp(home.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });

    // Two of bo's devices live on instance A, one on B; A is about to die.
    let aAlive = true;
    const viaA = () => (aAlive ? urlA : urlB);
    const phones = [device(viaA, bo.tokens.accessToken), device(viaA, bo.tokens.accessToken)];
    const laptop = device(() => urlB, bo.tokens.accessToken);
    const recipients = [
      { name: 'bo phone 1 (A, then B)', events: await tap(phones[0] as TestClient, home, bo.user.id) },
      { name: 'bo phone 2 (A, then B)', events: await tap(phones[1] as TestClient, home, bo.user.id) },
      { name: 'bo laptop (B)', events: await tap(laptop, home, bo.user.id) },
    ];
    const resolved: Message[] = [];
    const send = async (content: string) => {
      resolved.push(await al.api.message.send.mutate({ conversationId: id, content }));
    };
    for (let i = 0; i < 10; i++) await send(`before-${i}`);
    await recipients[0]?.events.until(
      (r) => r.filter((x) => x.event.type === 'message.created').length >= 10,
    );

    await a.kill();
    aAlive = false;
    // Sent while the phones are disconnected and reconnecting elsewhere.
    for (let i = 0; i < 10; i++) await send(`gap-${i}`);
    for (let i = 0; i < 10; i++) await send(`after-${i}`);

    await oracle({
      label: 'API instance SIGKILL',
      scenario,
      conversationId: id,
      attempted: 30,
      resolved,
      recipients,
      notes: { instancesKilled: 1, devicesMoved: 2 },
    });
    for (const r of recipients) expect(r.events.of('resync')).toEqual([]);
    await Promise.all(recipients.map((r) => r.events.stop()));
    await Promise.all([...phones, laptop, al, bo].map((client) => client.close()));
  });
});
