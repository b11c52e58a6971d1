import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { App } from '../server/src/app.js';
import { createParleyClient } from '../client-sdk/src/index.js';
import { TestDeployment, engineLabel } from './support/env.js';

/**
 * The package as users get it: `npm pack`, installed into a project outside this repository,
 * type-checked and run against a live server.
 */
const run = promisify(execFile);
const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const sdkDir = path.join(repoDir, 'client-sdk');

let deployment: TestDeployment;
let app: App;
let projectDir: string;
let installedDir: string;

/** Runs a command, keeping npm settings of an enclosing `npm test` out of it. */
async function sh(command: string, args: string[], cwd: string, env: Record<string, string> = {}) {
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith('npm_')),
  );
  try {
    return await run(command, args, { cwd, env: { ...clean, ...env }, maxBuffer: 16 * 1024 * 1024 });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`${command} ${args.join(' ')} failed:\n${stdout ?? ''}\n${stderr ?? ''}`, {
      cause: error,
    });
  }
}

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start();
  projectDir = await mkdtemp(path.join(tmpdir(), 'parley-sdk-consumer-'));
  // `npm pack` builds the package first (its `prepack` script), so a clean checkout works too.
  const { stdout } = await sh('npm', ['pack', '--json', '--pack-destination', projectDir], sdkDir);
  const [packed] = JSON.parse(stdout.slice(stdout.indexOf('['))) as { filename: string }[];
  if (!packed) throw new Error('npm pack reported no file');
  await writeFile(
    path.join(projectDir, 'package.json'),
    JSON.stringify({ name: 'parley-consumer', private: true, type: 'module' }),
  );
  // One install: the tarball, its dependencies from the registry, and Node's types for the
  // README example (it reads PARLEY_URL). TypeScript comes in as @trpc/client's peer.
  await sh(
    'npm',
    ['install', '--no-audit', '--no-fund', `./${packed.filename}`, '@types/node@20'],
    projectDir,
  );
  installedDir = path.join(projectDir, 'node_modules', '@parley', 'client');
}, 120_000);

afterAll(async () => {
  await deployment?.cleanup();
  if (projectDir) await rm(projectDir, { recursive: true, force: true });
});

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

const tsconfig = (files: string[]) =>
  JSON.stringify({
    compilerOptions: {
      target: 'ES2023',
      lib: ['ESNext', 'DOM'],
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      // Check the package's declarations too: every type they name must resolve.
      skipLibCheck: false,
      types: ['node'],
      outDir: 'out',
    },
    files,
  });

async function tsc(config: string) {
  const result = await run(path.join(projectDir, 'node_modules', '.bin', 'tsc'), ['-p', config], {
    cwd: projectDir,
  }).then(
    ({ stdout }) => ({ ok: true, output: stdout }),
    (error: { stdout?: string; stderr?: string }) => ({
      ok: false,
      output: `${error.stdout ?? ''}${error.stderr ?? ''}`,
    }),
  );
  return result;
}

const consumer = `
import { createParleyClient, errorCode, type Message, type ParleyEventOf, type RouterInputs } from '@parley/client';
import { fileTokenStorage } from '@parley/client/node';

export async function typedUsage(url: string): Promise<number> {
  const parley = createParleyClient({ url, storage: fileTokenStorage('./session.json') });
  const page = await parley.api.conversation.list.query({ limit: 10 });
  const conversationId: string = page.items[0]?.id ?? '';
  const sent: Message = await parley.api.message.send.mutate({ conversationId, content: 'typed' });
  const sentAt: Date = sent.sentAt;
  // @ts-expect-error seq is a number
  const wrongSeq: string = sent.seq;
  // @ts-expect-error there is no such procedure
  await parley.api.message.shout.mutate({ conversationId });
  parley.events.on('message.created', (event) => {
    const message: Message = event.message;
    console.log(message.content, sentAt, wrongSeq);
  });
  parley.events.on('typing', (event: ParleyEventOf<'typing'>) => console.log(event.until.getTime()));
  // @ts-expect-error not an event type
  parley.events.on('message.exploded', () => {});
  const input: RouterInputs['message']['send'] = { conversationId, content: 'again' };
  try {
    await parley.api.message.send.mutate(input);
  } catch (error) {
    if (errorCode(error) === 'FORBIDDEN') return -1;
  }
  return sent.seq;
}
`;

const wrong = `
import { createParleyClient } from '@parley/client';

const parley = createParleyClient({ url: 'http://localhost:3000' });
await parley.api.message.send.mutate({ conversationId: 'c', content: 42 });
`;

describe(`@parley/client as a packed package (${engineLabel})`, () => {
  it('ships its types without the server: every declaration resolves inside the package or its dependencies', async () => {
    const manifest = JSON.parse(await readFile(path.join(installedDir, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      peerDependencies: Record<string, string>;
      peerDependenciesMeta: Record<string, { optional?: boolean }>;
    };
    // The React bindings (dist/react/) alone may import the optional peers the app brings.
    const reactDir = path.join(installedDir, 'dist', 'react') + path.sep;
    for (const peer of Object.keys(manifest.peerDependencies)) {
      expect(manifest.peerDependenciesMeta[peer]?.optional, peer).toBe(true);
    }
    const files = await filesUnder(installedDir);
    expect(files.some((file) => file.endsWith(path.join('dist', 'index.d.ts')))).toBe(true);
    expect(files.some((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))).toBe(false);
    for (const file of files.filter((name) => name.endsWith('.d.ts') || name.endsWith('.js'))) {
      const text = await readFile(file, 'utf8');
      for (const [, specifier] of text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*)['"]([^'"]+)['"]/g)) {
        if (!specifier) continue;
        if (specifier.startsWith('.')) {
          const target = path.resolve(path.dirname(file), specifier);
          expect(target.startsWith(installedDir + path.sep), `${file}: ${specifier}`).toBe(true);
        } else if (!specifier.startsWith('node:')) {
          const name = specifier.startsWith('@')
            ? specifier.split('/').slice(0, 2).join('/')
            : specifier.split('/')[0];
          const allowed = Object.keys(manifest.dependencies).concat(
            file.startsWith(reactDir) ? Object.keys(manifest.peerDependencies) : [],
          );
          expect(allowed, `${file}: ${specifier}`).toContain(name);
        }
      }
    }
    // The browser entry and everything it loads stays off Node's built-ins.
    const mainJs = files.filter((file) => file.endsWith('.js') && !/(cli|node)\.js$/.test(file));
    for (const file of mainJs) expect(await readFile(file, 'utf8'), file).not.toMatch(/from ['"]node:/);
  });

  it('type-checks a consumer, and refuses a wrong input', async () => {
    const readme = await readFile(path.join(sdkDir, 'README.md'), 'utf8');
    const example = /## Example\s+```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toBeTruthy();
    await writeFile(path.join(projectDir, 'readme.ts'), example ?? '');
    await writeFile(path.join(projectDir, 'consumer.ts'), consumer);
    await writeFile(path.join(projectDir, 'wrong.ts'), wrong);
    await writeFile(path.join(projectDir, 'tsconfig.json'), tsconfig(['consumer.ts', 'readme.ts']));
    await writeFile(path.join(projectDir, 'tsconfig.wrong.json'), tsconfig(['wrong.ts']));

    const good = await tsc('tsconfig.json');
    expect(good.output).toBe('');
    expect(good.ok).toBe(true);

    const bad = await tsc('tsconfig.wrong.json');
    expect(bad.ok).toBe(false);
    const errors = bad.output.split('\n').filter((line) => /error TS\d+/.test(line));
    // Exactly one error, on the line with the number where a string belongs.
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^wrong\.ts\(5,/);
  });

  it('runs the README example against a live server', async () => {
    // Compiled by the previous test; the example talks to the server over HTTP and WebSocket.
    const { stdout } = await sh('node', ['out/readme.js'], projectDir, { PARLEY_URL: app.url });
    expect(stdout.trim()).toMatch(/^#\d+ reader_[a-z0-9]+: Hello, Parley!$/);
  });

  it('drives the parley-chat command: register, whoami, send and tail', async () => {
    const bin = path.join(projectDir, 'node_modules', '.bin', 'parley-chat');
    const common = ['--url', app.url, '--token-file', path.join(projectDir, 'cli-session.json')];
    const username = `cli_${Math.random().toString(36).slice(2, 8)}`;
    const register = await sh(
      bin,
      ['register', '--username', username, '--email', `${username}@example.test`, ...common],
      projectDir,
      { PARLEY_PASSWORD: 'correct horse battery' },
    );
    expect(register.stdout).toContain(`signed in as ${username}`);
    const whoami = await sh(bin, ['whoami', ...common], projectDir);
    const cliUserId = /([0-9a-f-]{36})\s*$/.exec(whoami.stdout)?.[1];
    expect(cliUserId).toBeTruthy();

    // Someone else puts the command-line user in a group.
    const alice = createParleyClient({ url: app.url });
    await alice.register({
      username: `${username}_a`,
      email: `${username}_a@example.test`,
      password: 'correct horse battery',
    });
    const group = await alice.api.conversation.createGroup.mutate({
      name: 'cli',
      memberIds: [cliUserId ?? ''],
    });

    const tail = spawn(bin, ['tail', '--json', ...common], { cwd: projectDir });
    let out = '';
    let err = '';
    tail.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    tail.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => tail.on('exit', resolve));
    try {
      await waitFor(
        () => err.includes('Listening'),
        () => `tail did not start: ${err}`,
      );
      const send = await sh(
        bin,
        ['send', group.id, 'hello', 'from', 'the', 'terminal', ...common],
        projectDir,
      );
      expect(send.stdout).toMatch(/^[0-9a-f-]{36} #\d+ /);
      await alice.api.message.send.mutate({ conversationId: group.id, content: 'hello back' });
      await waitFor(
        () => out.includes('hello back'),
        () => `tail printed:\n${out}\n${err}`,
      );
      const printed = out
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { type: string; message?: { content: string } })
        .filter((event) => event.type === 'message.created')
        .map((event) => event.message?.content);
      expect(printed).toEqual(['hello from the terminal', 'hello back']);
    } finally {
      tail.kill('SIGINT');
      await alice.close();
    }
    expect(await exited).toBe(0);
  });

  it('drives parley-chat from a user name to a conversation: open, group create, send, history, conversations', async () => {
    const bin = path.join(projectDir, 'node_modules', '.bin', 'parley-chat');
    const common = ['--url', app.url, '--token-file', path.join(projectDir, 'cli-session-2.json')];
    const suffix = Math.random().toString(36).slice(2, 8);
    const me = `me_${suffix}`;
    await sh(bin, ['register', '--username', me, '--email', `${me}@example.test`, ...common], projectDir, {
      PARLEY_PASSWORD: 'correct horse battery',
    });
    const friends = await Promise.all(
      ['bo', 'cy'].map(async (name) => {
        const client = createParleyClient({ url: app.url });
        const username = `${name}_${suffix}`;
        await client.register({
          username,
          email: `${username}@example.test`,
          password: 'correct horse battery',
        });
        return { client, username };
      }),
    );
    const [bo, cy] = friends as [(typeof friends)[number], (typeof friends)[number]];
    try {
      const opened = await sh(bin, ['open', bo.username, ...common], projectDir);
      const directId = /^([0-9a-f-]{36}) /.exec(opened.stdout)?.[1];
      expect(directId).toBeTruthy();
      // Opening again finds the same conversation.
      expect((await sh(bin, ['open', `@${bo.username}`, ...common], projectDir)).stdout).toContain(directId);

      const created = await sh(
        bin,
        ['group', 'create', `crew ${suffix}`, bo.username, cy.username, ...common],
        projectDir,
      );
      expect(created.stdout).toMatch(/\(3 members\)/);

      await sh(bin, ['send', bo.username, 'hi', 'bo', ...common], projectDir);
      await sh(bin, ['send', `crew ${suffix}`, 'hi', 'crew', ...common], projectDir);
      await bo.client.api.message.send.mutate({ conversationId: directId ?? '', content: 'hi yourself' });

      const history = await sh(bin, ['history', bo.username, ...common], projectDir);
      expect(history.stdout.trim().split('\n')).toEqual([
        expect.stringMatching(new RegExp(`^#1 \\S+ ${me}: hi bo$`)),
        expect.stringMatching(new RegExp(`^#2 \\S+ ${bo.username}: hi yourself$`)),
      ]);

      const listed = (await sh(bin, ['conversations', ...common], projectDir)).stdout.trim().split('\n');
      expect(listed).toHaveLength(2);
      // Newest activity first: the direct conversation, with one unread message from bo.
      expect(listed[0]).toContain(`${directId}  @${bo.username} (1 unread) ${bo.username}: hi yourself`);
      expect(listed[1]).toContain(`crew ${suffix} (group) ${me}: hi crew`);

      const unknown = await sh(bin, ['history', 'nobody-by-that-name', ...common], projectDir).catch(
        (error: Error) => error.message,
      );
      expect(unknown).toContain('no conversation named "nobody-by-that-name"');
    } finally {
      await Promise.all(friends.map((friend) => friend.client.close()));
    }
  });
});

async function waitFor(condition: () => boolean, message: () => string, timeoutMs = 10_000) {
  await vi.waitFor(
    () => {
      if (!condition()) throw new Error(message());
    },
    { timeout: timeoutMs, interval: 25 },
  );
}
