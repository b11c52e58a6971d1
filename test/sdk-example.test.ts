import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import type { ParleyClient } from '../client-sdk/src/index.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { sdkUser, streamLive, waitFor } from './support/sdk.js';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

let deployment: TestDeployment;
let app: App;
const clients: ParleyClient[] = [];

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start();
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await deployment?.cleanup();
});

describe(`client-sdk/examples/chat-bot.ts (${engineLabel})`, () => {
  it('registers itself, then answers !ping and !echo in a direct conversation', async () => {
    const botName = `bot_${Math.random().toString(36).slice(2, 8)}`;
    const bot = spawn(
      path.join(repoDir, 'node_modules', '.bin', 'tsx'),
      [path.join(repoDir, 'client-sdk', 'examples', 'chat-bot.ts')],
      {
        cwd: repoDir,
        env: { ...process.env, PARLEY_URL: app.url, PARLEY_BOT_USERNAME: botName },
      },
    );
    let output = '';
    bot.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    bot.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => bot.on('exit', resolve));
    try {
      await waitFor(
        () => output.includes('is listening'),
        () => `the bot did not start:\n${output}`,
        20_000,
      );
      const user = await sdkUser(app, clients);
      const { items } = await user.api.user.list.query({ query: botName });
      const botUser = items.find((candidate) => candidate.username === botName);
      if (!botUser) throw new Error('the bot did not register');
      await streamLive(app, botUser.id);
      const direct = await user.api.conversation.openDirect.mutate({ userId: botUser.id });

      const replies: string[] = [];
      user.events.on('message.created', ({ message }) => {
        if (message.senderId === botUser.id) replies.push(message.content);
      });
      await streamLive(app, user.id);
      await user.api.message.send.mutate({ conversationId: direct.id, content: '!ping' });
      await waitFor(
        () => replies.length === 1,
        () => `replies: ${replies.join(', ')}\n${output}`,
      );
      await user.api.message.send.mutate({ conversationId: direct.id, content: 'just chatting' });
      await user.api.message.send.mutate({ conversationId: direct.id, content: '!echo one two' });
      await waitFor(
        () => replies.length === 2,
        () => `replies: ${replies.join(', ')}\n${output}`,
      );
      expect(replies).toEqual(['pong', 'one two']);
    } finally {
      bot.kill('SIGINT');
    }
    expect(await exited).toBe(0);
  });
});
