/**
 * A small bot: answers `!ping` with `pong` and `!echo <text>` with the text, in every
 * conversation it is a member of. Add it to a group (or open a direct conversation with it) and
 * try it.
 *
 *   PARLEY_URL=http://localhost:3000 PARLEY_BOT_USERNAME=bot PARLEY_BOT_PASSWORD=… \
 *     npx tsx client-sdk/examples/chat-bot.ts
 *
 * The bot signs in, or registers itself on first run. In your own project, import from
 * '@parley/client' instead of '../src/index.js'.
 */
import { createParleyClient, errorCode } from '../src/index.js';

const url = process.env.PARLEY_URL ?? 'http://localhost:3000';
const username = process.env.PARLEY_BOT_USERNAME ?? 'echo_bot';
const password = process.env.PARLEY_BOT_PASSWORD ?? 'echo bot password';

const parley = createParleyClient({ url });

try {
  await parley.login({ username, password });
} catch (error) {
  if (errorCode(error) !== 'UNAUTHORIZED') throw error;
  await parley.register({ username, password, email: `${username}@example.com`, displayName: 'Echo bot' });
}
const me = await parley.currentUser();
if (!me) throw new Error('not signed in');

parley.events.on('message.created', ({ message }) => {
  if (message.senderId === me.id) return;
  const reply =
    message.content === '!ping'
      ? 'pong'
      : message.content.startsWith('!echo ')
        ? message.content.slice('!echo '.length)
        : null;
  if (reply === null) return;
  parley.api.message.send
    .mutate({ conversationId: message.conversationId, content: reply })
    .catch((error: unknown) => console.error('could not reply:', error));
});
parley.events.onResync(() => console.log('(some events were missed while away)'));
parley.events.onError((error) => console.error('event stream interrupted, reconnecting:', error));
await parley.events.ready();
console.log(`${me.username} is listening on ${url}; Ctrl-C to stop`);

process.once('SIGINT', () => {
  void parley.close().then(() => process.exit(0));
});
