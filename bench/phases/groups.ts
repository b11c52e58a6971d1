/**
 * Group-size scaling (Parley): for each size G, a fresh server process and Redis prefix; G
 * accounts; one owner builds a group of G through the API (`conversation.createGroup`, then
 * `conversation.addMembers`, 500 users per call), then sends messages into it one after the
 * other over HTTP. Measured: the build's time and Redis growth, each send's duration, and
 * Redis's CPU (`INFO commandstats`) and memory (`INFO memory`) per message.
 */
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { createParleyClient, errorCode, type ParleyClient } from '@parley/client';
import type { Tokens } from '../../server/src/credentials/schemas.js';
import { Histogram, summarize } from '../lib/histogram.js';
import { commandMicros, deleteKeys, keyBytes, usedMemory } from '../lib/redis.js';
import type { GroupRow, GroupScalingResult } from '../results-types.js';
import type { PhaseContext, ServerProcess } from './context.js';

/** Messages sent at each size. */
export const SENDS = 200;
/** Users per `createGroup` and `addMembers` call: the most either accepts. */
const PER_CALL = 500;
/**
 * Building stops once Redis has grown by this much: five times the target, so the row has
 * failed already, and each further call could take gigabytes of the Redis other programs share.
 */
const BUILD_REDIS_LIMIT_BYTES = 250 * 2 ** 20;
const BUILD_TIME_LIMIT_MS = 180_000;
const SEND_TIME_LIMIT_MS = 120_000;
/** Long enough to see Redis's rate of work with nothing sent. */
const IDLE_WINDOW_MS = 2_000;
/** The worker trims the message stream at most every 5 s, after a read that waits up to 1 s. */
const TRIM_WAIT_MS = 6_500;

interface CreatedUser {
  user: { id: string; username: string };
  tokens: Tokens | null;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Adds what failed to the row's outcome. */
function fail(row: GroupRow, what: string): void {
  row.error = row.error ? `${row.error}; ${what}` : what;
}

function describe(error: unknown): string {
  const message = (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
  const code = errorCode(error);
  return code ? `${code}: ${message}` : message;
}

export async function benchGroups(ctx: PhaseContext): Promise<GroupScalingResult> {
  const rows: GroupRow[] = [];
  for (const size of ctx.options.groups) rows.push(await measureSize(ctx, size));
  return { sends: SENDS, rows };
}

/** One size; whatever fails is recorded in the row, never thrown. */
async function measureSize(ctx: PhaseContext, size: number): Promise<GroupRow> {
  const row: GroupRow = {
    members: size,
    built: 0,
    buildSeconds: null,
    buildError: null,
    buildRedisBytes: null,
    sends: 0,
    sendErrors: 0,
    sendMs: null,
    redisUsPerSend: null,
    redisUsPerSendRaw: null,
    redisIdleUsPerS: null,
    redisBytesPerMessageAtOnce: null,
    redisBytesPerMessage: null,
    keyBytesPerMessage: null,
    error: null,
  };
  const prefix = ctx.keyPrefix(`groups-${size}`);
  let server: ServerProcess | null = null;
  let client: ParleyClient | null = null;
  try {
    server = await ctx.startServer('parley', { prefix });
    const created = performance.now();
    const users = await server.call<CreatedUser[]>(
      'createUsers',
      { count: size, tag: randomBytes(3).toString('hex'), sessions: 1 },
      600_000,
    );
    const owner = users[0];
    if (!owner?.tokens) throw new Error('the owner has no session');
    ctx.log(
      `parley: group of ${size}: ${size} accounts in ${((performance.now() - created) / 1000).toFixed(1)} s`,
    );
    client = createParleyClient({
      url: server.url,
      tokens: owner.tokens,
      WebSocket,
      // A failed call is reported, not retried.
      sendRetry: { attempts: 1 },
    });
    const conversationId = await build(ctx, client, users, row);
    // A call that failed may still have added its members (the failure can come after the
    // commit): the sends are measured whenever the group has reached its size.
    if (conversationId && row.built === size) await send(ctx, server, client, conversationId, prefix, row);
  } catch (error) {
    fail(row, describe(error));
  } finally {
    await client?.close().catch(() => undefined);
    await server?.stop(15_000);
    await deleteKeys(ctx.redis, `${prefix}*`).catch(() => undefined);
  }
  ctx.log(`parley: group of ${size}: ${describeRow(row)}`);
  return row;
}

/** createGroup with the first 500 others, then addMembers 500 at a time; returns the group's id. */
async function build(
  ctx: PhaseContext,
  client: ParleyClient,
  users: CreatedUser[],
  row: GroupRow,
): Promise<string | null> {
  const others = users.slice(1).map((account) => account.user.id);
  const memoryBefore = await usedMemory(ctx.redis);
  const started = performance.now();
  const signal = AbortSignal.timeout(BUILD_TIME_LIMIT_MS);
  let call = 'conversation.createGroup';
  let conversationId: string | null = null;
  try {
    const first = others.slice(0, PER_CALL);
    const conversation = await client.api.conversation.createGroup.mutate(
      { name: `group of ${row.members}`, memberIds: first },
      { signal },
    );
    conversationId = conversation.id;
    row.built = 1 + first.length;
    for (let at = PER_CALL; at < others.length; at += PER_CALL) {
      const grown = (await usedMemory(ctx.redis)) - memoryBefore;
      if (grown > BUILD_REDIS_LIMIT_BYTES) {
        row.buildError =
          `building stopped at ${row.built.toLocaleString('en-US')} members: Redis had grown by ${(grown / 2 ** 20).toFixed(0)} MB ` +
          `(the bench stops at ${BUILD_REDIS_LIMIT_BYTES / 2 ** 20} MB)`;
        break;
      }
      const chunk = others.slice(at, at + PER_CALL);
      call = `conversation.addMembers (members ${row.built + 1}–${row.built + chunk.length})`;
      await client.api.conversation.addMembers.mutate({ id: conversation.id, userIds: chunk }, { signal });
      row.built += chunk.length;
    }
  } catch (error) {
    row.buildError = `${call} failed after ${((performance.now() - started) / 1000).toFixed(1)} s: ${describe(error)}`;
    if (conversationId) {
      // How far it got, as the server has it.
      const group = await client.api.conversation.byId.query({ id: conversationId }).catch(() => null);
      if (group) {
        row.built = group.members.length;
        row.buildError += ` (the group has ${row.built} members)`;
      }
    }
  }
  row.buildSeconds = (performance.now() - started) / 1000;
  row.buildRedisBytes = (await usedMemory(ctx.redis)) - memoryBefore;
  return conversationId;
}

/** Waits until the persistence worker has written everything and holds nothing pending. */
async function workerCaughtUp(server: ServerProcess, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const lag = await server.call<{ lag: number; pending: number } | null>('groupLag');
    if (lag && lag.lag === 0 && lag.pending === 0) return true;
    await sleep(100);
  }
  return false;
}

async function send(
  ctx: PhaseContext,
  server: ServerProcess,
  client: ParleyClient,
  conversationId: string,
  prefix: string,
  row: GroupRow,
): Promise<void> {
  const { redis } = ctx;
  if (!(await workerCaughtUp(server, 60_000)))
    ctx.log('parley: the worker had not caught up before the sends');
  const keysBefore = await keyBytes(redis, `${prefix}*`);
  const memoryBefore = await usedMemory(redis);
  // Redis's rate of work with nothing sent (other clients, Parley's idle polling), just before.
  const idleFrom = await commandMicros(redis);
  const idleStarted = performance.now();
  await sleep(IDLE_WINDOW_MS);
  const cpuBefore = await commandMicros(redis);
  const idleRate = (cpuBefore - idleFrom) / ((performance.now() - idleStarted) / 1000);

  const durations = new Histogram();
  const content = 'x'.repeat(ctx.options.messageSize);
  const started = performance.now();
  const signal = AbortSignal.timeout(SEND_TIME_LIMIT_MS);
  let attempted = 0;
  let firstError: string | null = null;
  for (let i = 0; i < SENDS && !signal.aborted; i++) {
    attempted += 1;
    const sentAt = performance.now();
    try {
      await client.api.message.send.mutate({ conversationId, content }, { signal });
      durations.record(performance.now() - sentAt);
      row.sends += 1;
    } catch (error) {
      row.sendErrors += 1;
      firstError ??= describe(error);
    }
  }
  const windowS = (performance.now() - started) / 1000;
  const cpuAfter = await commandMicros(redis);
  const memoryAtOnce = await usedMemory(redis);

  row.sendMs = row.sends > 0 ? summarize(durations) : null;
  row.redisIdleUsPerS = idleRate;
  row.redisUsPerSendRaw = (cpuAfter - cpuBefore) / attempted;
  row.redisUsPerSend = Math.max(0, cpuAfter - cpuBefore - idleRate * windowS) / attempted;
  if (row.sends > 0) row.redisBytesPerMessageAtOnce = (memoryAtOnce - memoryBefore) / row.sends;
  if (firstError) fail(row, `${row.sendErrors} of ${attempted} sends failed (first: ${firstError})`);
  if (attempted < SENDS) fail(row, `sending stopped after ${SEND_TIME_LIMIT_MS / 1000} s`);
  if (row.sends === 0) return;

  if (!(await workerCaughtUp(server, 60_000))) {
    fail(row, 'the worker had not written the messages 60 s later');
    return;
  }
  await sleep(TRIM_WAIT_MS);
  row.redisBytesPerMessage = ((await usedMemory(redis)) - memoryBefore) / row.sends;
  row.keyBytesPerMessage = ((await keyBytes(redis, `${prefix}*`)) - keysBefore) / row.sends;
}

const mb = (bytes: number | null) =>
  bytes === null ? '–' : `${bytes < 0 ? '−' : '+'}${(Math.abs(bytes) / 2 ** 20).toFixed(1)} MB`;

function describeRow(row: GroupRow): string {
  return (
    `built ${row.built} of ${row.members} in ${row.buildSeconds?.toFixed(2) ?? '–'} s, Redis ${mb(row.buildRedisBytes)}; ` +
    `${row.sends} sends (${row.sendErrors} failed), p50 ${row.sendMs?.p50.toFixed(1) ?? '–'} p99 ${row.sendMs?.p99.toFixed(1) ?? '–'} ms, ` +
    `Redis ${row.redisUsPerSend?.toFixed(0) ?? '–'} µs per send (${row.redisUsPerSendRaw?.toFixed(0) ?? '–'} before subtracting ` +
    `${row.redisIdleUsPerS?.toFixed(0) ?? '–'} µs/s idle), ${row.redisBytesPerMessageAtOnce?.toFixed(0) ?? '–'} bytes per message at once, ` +
    `${row.redisBytesPerMessage?.toFixed(0) ?? '–'} after the worker (own keys ${row.keyBytesPerMessage?.toFixed(0) ?? '–'})` +
    (row.buildError ? `; ${row.buildError}` : '') +
    (row.error ? `; ${row.error}` : '')
  );
}
