#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { createParleyClient, type ParleyClient } from './client.js';
import { errorCode } from './errors.js';
import { defaultSessionPath, fileTokenStorage, readSessionFile, writeSessionFile } from './node.js';
import type { ParleyEvent } from './types.js';

const usage = `Usage: parley-chat <command> [options]

Commands:
  login --username <name> | --email <address>   sign in (password from --password,
                                                PARLEY_PASSWORD or a prompt)
  register --username <name> --email <address> [--display-name <name>]
  logout [--everywhere]                         end the session
  whoami                                        print the signed-in user
  conversations                                 your conversations, newest activity first
  open <username>                               open (or find) the direct conversation with
                                                a user and print its id
  group create <name> [<username>…]             create a group with these members
  history <conversation> [--limit <n>]          the latest messages, oldest first
  send <conversation> <text…>                   post a message
  tail [--json]                                 print the event stream until interrupted

Options:
  --url <url>          server URL (default: PARLEY_URL, the URL used at login, or
                       http://localhost:3000)
  <conversation> is a conversation id, a group's name or a direct partner's username.

  --token-file <path>  where the session is kept (default: PARLEY_TOKEN_FILE or
                       ${defaultSessionPath()})
`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: 'string' },
    'token-file': { type: 'string' },
    username: { type: 'string' },
    email: { type: 'string' },
    password: { type: 'string' },
    'display-name': { type: 'string' },
    everywhere: { type: 'boolean' },
    json: { type: 'boolean' },
    limit: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});

const [command, ...rest] = positionals;
const tokenFile = values['token-file'] ?? process.env.PARLEY_TOKEN_FILE ?? defaultSessionPath();

async function main(): Promise<number> {
  if (values.help || !command) {
    process.stdout.write(usage);
    return command || values.help ? 0 : 2;
  }
  const saved = await readSessionFile(tokenFile);
  const url = values.url ?? process.env.PARLEY_URL ?? saved.url ?? 'http://localhost:3000';
  const client = createParleyClient({ url, storage: fileTokenStorage(tokenFile) });
  try {
    return await run(client, url, command);
  } finally {
    await client.close();
  }
}

async function run(client: ParleyClient, url: string, command: string): Promise<number> {
  switch (command) {
    case 'login': {
      const password = values.password ?? process.env.PARLEY_PASSWORD ?? (await prompt('Password: '));
      const user = values.email
        ? await client.login({ email: values.email, password })
        : await client.login({ username: need(values.username, '--username or --email'), password });
      await remember(url);
      console.log(`Signed in as ${user.username} (session kept in ${tokenFile})`);
      return 0;
    }
    case 'register': {
      const password = values.password ?? process.env.PARLEY_PASSWORD ?? (await prompt('Password: '));
      const user = await client.register({
        username: need(values.username, '--username'),
        email: need(values.email, '--email'),
        password,
        displayName: values['display-name'],
      });
      await remember(url);
      console.log(`Registered and signed in as ${user.username}`);
      return 0;
    }
    case 'logout':
      await client.logout({ everywhere: values.everywhere });
      console.log('Signed out');
      return 0;
    case 'whoami': {
      const user = await client.currentUser();
      if (!user) return notSignedIn();
      console.log(`${user.username} (${user.displayName}) <${user.email}> ${user.id}`);
      return 0;
    }
    case 'conversations': {
      const me = await client.currentUser();
      if (!me) return notSignedIn();
      for (const conversation of await allConversations(client)) {
        const last = conversation.lastMessage;
        const unread = conversation.unreadCount > 0 ? ` (${conversation.unreadCount} unread)` : '';
        const preview = last ? ` ${last.senderUsername}: ${oneLine(last.content)}` : '';
        console.log(`${conversation.id}  ${titleOf(conversation, me.id)}${unread}${preview}`);
      }
      return 0;
    }
    case 'open': {
      const [username] = rest;
      if (!username) throw new UsageError('open needs <username>');
      if (!(await client.currentUser())) return notSignedIn();
      const [user] = await usersNamed(client, [username]);
      const conversation = await client.api.conversation.openDirect.mutate({ userId: user?.id ?? '' });
      console.log(`${conversation.id}  ${username}`);
      return 0;
    }
    case 'group': {
      const [verb, name, ...usernames] = rest;
      if (verb !== 'create' || !name) throw new UsageError('group create needs <name> [<username>…]');
      if (!(await client.currentUser())) return notSignedIn();
      const members = await usersNamed(client, usernames);
      const group = await client.api.conversation.createGroup.mutate({
        name,
        memberIds: members.map((user) => user.id),
      });
      console.log(`${group.id}  ${group.name ?? name} (${group.members.length} members)`);
      return 0;
    }
    case 'history': {
      const [which] = rest;
      if (!which) throw new UsageError('history needs <conversation>');
      const me = await client.currentUser();
      if (!me) return notSignedIn();
      const limit = values.limit === undefined ? 20 : Number(values.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw new UsageError('--limit is 1 to 100');
      const conversationId = await resolveConversation(client, which, me.id);
      const page = await client.api.message.list.query({ conversationId, limit });
      for (const message of [...page.items].reverse()) {
        const content = message.deletedAt ? '(deleted)' : oneLine(message.content);
        const edited = message.editedAt && !message.deletedAt ? ' (edited)' : '';
        console.log(
          `#${message.seq} ${message.sentAt.toISOString()} ${message.senderUsername}: ${content}${edited}`,
        );
      }
      return 0;
    }
    case 'send': {
      const [which, ...words] = rest;
      if (!which || words.length === 0) throw new UsageError('send needs <conversation> <text>');
      const me = await client.currentUser();
      if (!me) return notSignedIn();
      const conversationId = await resolveConversation(client, which, me.id);
      const message = await client.api.message.send.mutate({ conversationId, content: words.join(' ') });
      console.log(`${message.id} #${message.seq} ${message.sentAt.toISOString()}`);
      return 0;
    }
    case 'tail': {
      if (!(await client.currentUser())) return notSignedIn();
      client.events.onError((error) => console.error(`stream interrupted: ${String(error)}`));
      const stop = new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      const printing = (async () => {
        for await (const event of client.events) {
          console.log(values.json ? JSON.stringify(event) : describe(event));
        }
      })();
      await client.events.ready();
      console.error('Listening; Ctrl-C to stop.');
      await Promise.race([stop, printing]);
      return 0;
    }
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

class UsageError extends Error {}

type Conversation = Awaited<
  ReturnType<ParleyClient['api']['conversation']['list']['query']>
>['items'][number];

async function allConversations(client: ParleyClient): Promise<Conversation[]> {
  const all: Conversation[] = [];
  let cursor: string | null = null;
  do {
    const page: { items: Conversation[]; nextCursor: string | null } =
      await client.api.conversation.list.query({ limit: 100, cursor });
    all.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return all;
}

/** A group's name, or the other member's username for a direct conversation. */
function titleOf(conversation: Conversation, myId: string): string {
  if (conversation.type === 'group') return `${conversation.name ?? ''} (group)`;
  const other = conversation.members.find((member) => member.userId !== myId);
  return other ? `@${other.username}` : '(direct)';
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** An id as given, or the one conversation whose group name or direct partner matches. */
async function resolveConversation(client: ParleyClient, which: string, myId: string): Promise<string> {
  if (UUID.test(which)) return which;
  const wanted = which.replace(/^@/, '').toLowerCase();
  const matches = (await allConversations(client)).filter((conversation) =>
    conversation.type === 'group'
      ? conversation.name?.toLowerCase() === wanted
      : conversation.members.some((m) => m.userId !== myId && m.username.toLowerCase() === wanted),
  );
  const [only] = matches;
  if (!only) throw new UsageError(`no conversation named "${which}"`);
  if (matches.length > 1) throw new UsageError(`"${which}" names ${matches.length} conversations: use an id`);
  return only.id;
}

/** The users with exactly these usernames (ignoring case), in the order given. */
async function usersNamed(client: ParleyClient, usernames: string[]) {
  return Promise.all(
    usernames.map(async (username) => {
      const wanted = username.replace(/^@/, '');
      const page = await client.api.user.list.query({ query: wanted, limit: 100 });
      const user = page.items.find((candidate) => candidate.username.toLowerCase() === wanted.toLowerCase());
      if (!user) throw new UsageError(`no user named "${username}"`);
      return user;
    }),
  );
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, ' ');
  return flat.length > 80 ? `${flat.slice(0, 79)}…` : flat;
}

function need(value: string | undefined, what: string): string {
  if (!value) throw new UsageError(`${command ?? 'this command'} needs ${what}`);
  return value;
}

function notSignedIn(): number {
  console.error('Not signed in: run `parley-chat login` first.');
  return 1;
}

async function remember(url: string): Promise<void> {
  await writeSessionFile(tokenFile, { ...(await readSessionFile(tokenFile)), url });
}

function describe(event: ParleyEvent): string {
  switch (event.type) {
    case 'message.created':
    case 'message.updated':
      return `${event.message.sentAt.toISOString()} [${event.message.conversationId}] ${event.message.senderUsername}: ${event.message.content}${event.type === 'message.updated' ? ' (edited)' : ''}`;
    case 'message.deleted':
      return `[${event.conversationId}] message ${event.messageId} deleted`;
    case 'conversation.upserted':
      return `[${event.conversation.id}] conversation ${event.conversation.name ?? '(direct)'} updated`;
    case 'conversation.removed':
      return `[${event.conversationId}] conversation removed`;
    case 'conversation.updated':
      return `[${event.conversationId}] conversation renamed to ${event.name ?? '(none)'} by ${event.by}`;
    case 'member.updated':
      return `[${event.conversationId}] ${event.userId} is now ${event.role}`;
    case 'member.joined':
    case 'member.left':
      return `[${event.conversationId}] ${event.userIds.join(', ')} ${event.type === 'member.joined' ? 'joined' : 'left'}`;
    case 'typing':
      return `[${event.conversationId}] ${event.userId} is typing`;
    case 'read':
      return `[${event.conversationId}] ${event.userId} read up to #${event.seq}`;
    case 'presence':
      return `${event.userId} is ${event.online ? 'online' : 'offline'}`;
    case 'resync':
      return '(missed events: refetch with queries)';
  }
}

/** Reads a line from the terminal without echoing it, or from stdin when it is not a terminal. */
async function prompt(question: string): Promise<string> {
  const input = process.stdin;
  if (!input.isTTY) {
    let data = '';
    for await (const chunk of input) data += String(chunk);
    return data.split(/\r?\n/)[0] ?? '';
  }
  process.stderr.write(question);
  input.setRawMode(true);
  input.resume();
  input.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    let answer = '';
    const onData = (chunk: string) => {
      for (const char of chunk) {
        if (char === '\r' || char === '\n') {
          input.setRawMode(false);
          input.pause();
          input.off('data', onData);
          process.stderr.write('\n');
          resolve(answer);
          return;
        }
        if (char === '\u0003') {
          input.setRawMode(false);
          reject(new UsageError('cancelled'));
          return;
        }
        answer = char === '\u007f' ? answer.slice(0, -1) : answer + char;
      }
    };
    input.on('data', onData);
  });
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError) {
      console.error(`parley-chat: ${error.message}\n\n${usage}`);
      process.exit(2);
    }
    const code = errorCode(error);
    console.error(
      `parley-chat: ${code ? `${code}: ` : ''}${error instanceof Error ? error.message : String(error)}`,
    );
    process.exit(1);
  },
);
