/**
 * Partitions on a Redis Cluster (Parley): a three-master cluster of the phase's own; for one
 * partition and then for `--partitions` P, a fresh server process on it (`REDIS_CLUSTER=on`,
 * `REDIS_PARTITIONS`), direct conversations between pairs of accounts, and every pair's first
 * member sending into theirs at once over HTTP. Measured on each master (`INFO commandstats`):
 * its Redis CPU and script calls during the sends, and the busiest master's share of the Redis
 * CPU. With one partition one master runs every send's script; with several they spread.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { createParleyClient, type ParleyClient } from '@parley/client';
import type { Tokens } from '../../server/src/credentials/schemas.js';
import { startRedisCluster } from '../../test/support/redis-cluster.js';
import { hasRedisServer } from '../../test/support/redis-server.js';
import { commandMicros } from '../lib/redis.js';
import type { PartitionRun, PartitionsResult } from '../results-types.js';
import type { PhaseContext, ServerProcess } from './context.js';

/** Conversations (pairs of accounts) and sends into each. */
const PAIRS = 64;
const SENDS_PER_PAIR = 30;

interface CreatedUser {
  user: { id: string; username: string };
  tokens: Tokens | null;
}

export async function benchPartitions(ctx: PhaseContext): Promise<PartitionsResult> {
  if (!hasRedisServer())
    throw new Error('the partitions phase needs redis-server and redis-cli, to start a Redis Cluster');
  const cluster = await startRedisCluster();
  const masters = cluster.nodes.map((node) => new Redis(node.port, node.host));
  try {
    const runs: PartitionRun[] = [];
    for (const partitions of [1, ctx.options.partitions]) {
      runs.push(await measure(ctx, cluster.nodes[0] ?? { host: '127.0.0.1', port: 0 }, masters, partitions));
    }
    return { masters: masters.length, pairs: PAIRS, sendsPerPair: SENDS_PER_PAIR, runs };
  } finally {
    for (const master of masters) master.disconnect();
    await cluster.stop();
  }
}

async function measure(
  ctx: PhaseContext,
  node: { host: string; port: number },
  masters: Redis[],
  partitions: number,
): Promise<PartitionRun> {
  let server: ServerProcess | null = null;
  const clients: ParleyClient[] = [];
  try {
    server = await ctx.startServer('parley', {
      prefix: ctx.keyPrefix(`partitions-${partitions}`),
      env: {
        BENCH_REDIS_URL: `redis://${node.host}:${node.port}`,
        REDIS_CLUSTER: 'on',
        REDIS_PARTITIONS: String(partitions),
      },
    });
    const users = await server.call<CreatedUser[]>(
      'createUsers',
      { count: 2 * PAIRS, tag: randomBytes(3).toString('hex'), sessions: 2 * PAIRS },
      600_000,
    );
    const url = server.url;
    const conversations: { client: ParleyClient; id: string }[] = [];
    for (let pair = 0; pair < PAIRS; pair++) {
      const [sender, other] = [users[2 * pair], users[2 * pair + 1]];
      if (!sender?.tokens || !other) throw new Error('an account has no session');
      const client = createParleyClient({
        url,
        tokens: sender.tokens,
        WebSocket,
        sendRetry: { attempts: 1 },
      });
      clients.push(client);
      const { id } = await client.api.conversation.openDirect.mutate({ userId: other.user.id });
      conversations.push({ client, id });
    }
    const content = 'x'.repeat(ctx.options.messageSize);
    const before = await Promise.all(masters.map((master) => readStats(master)));
    const started = performance.now();
    let errors = 0;
    await Promise.all(
      conversations.map(async ({ client, id }) => {
        for (let i = 0; i < SENDS_PER_PAIR; i++) {
          await client.api.message.send.mutate({ conversationId: id, content }).catch(() => {
            errors += 1;
          });
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const after = await Promise.all(masters.map((master) => readStats(master)));
    const sends = PAIRS * SENDS_PER_PAIR - errors;
    const perMaster = masters.map((_, i) => ({
      master: i + 1,
      redisUs: (after[i]?.micros ?? 0) - (before[i]?.micros ?? 0),
      scriptCalls: (after[i]?.scripts ?? 0) - (before[i]?.scripts ?? 0),
    }));
    const total = perMaster.reduce((sum, figures) => sum + figures.redisUs, 0);
    const run: PartitionRun = {
      partitions,
      sends,
      errors,
      sendsPerS: sends / seconds,
      redisUsPerSend: sends > 0 ? total / sends : null,
      perMaster: perMaster.map((figures) => ({ ...figures, share: total > 0 ? figures.redisUs / total : 0 })),
      busiestShare: total > 0 ? Math.max(...perMaster.map((figures) => figures.redisUs)) / total : null,
    };
    ctx.log(
      `parley on a ${masters.length}-master cluster, ${partitions} partition(s): ${sends} sends at ` +
        `${run.sendsPerS.toFixed(0)}/s, Redis CPU by master ${perMaster.map((f) => `${(f.redisUs / 1000).toFixed(0)} ms`).join(' / ')}`,
    );
    return run;
  } finally {
    await Promise.all(clients.map((client) => client.close().catch(() => undefined)));
    await server?.stop(15_000);
  }
}

/** A master's Redis CPU so far (µs, `INFO` left out) and its script calls. */
async function readStats(master: Redis): Promise<{ micros: number; scripts: number }> {
  const micros = await commandMicros(master);
  const stats = await master.info('commandstats');
  let scripts = 0;
  for (const line of stats.split('\n')) {
    const match = /^cmdstat_(evalsha|eval):calls=(\d+)/.exec(line);
    if (match) scripts += Number(match[2]);
  }
  return { micros, scripts };
}
