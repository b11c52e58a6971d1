/**
 * The big room: N connected subscribers in one room (Parley: members of one group, each with
 * an `events` subscription over its WebSocket; Socket.IO: one room; raw: one channel), one of
 * them sending at a fixed rate. Every delivery's latency is measured, and the server's CPU per
 * delivery. Parley's room is made before its members connect, as an application would: past
 * `PARLEY_LARGE_GROUP` a group makes nobody a contact, so members coming online tell no one.
 */
import type { ServerName } from '../generator/worker.js';
import type { Child } from '../lib/children.js';
import { openFileLimit } from '../lib/proc.js';
import { deleteKeys } from '../lib/redis.js';
import type { BigRoomResult } from '../results-types.js';
import type { PhaseContext } from './context.js';

/** Descriptors a process needs beside its sockets (modules, pipes, engines' connections). */
const SPARE_FILES = 500;

export async function benchBigRoom(ctx: PhaseContext, name: ServerName): Promise<BigRoomResult> {
  const { options } = ctx;
  const size = options.bigRoom;
  // The server holds one socket per subscriber and so does the generator, each in its own
  // process; both inherit this process's limit.
  const limit = openFileLimit();
  if (limit < size + SPARE_FILES) {
    throw new Error(
      `ulimit -n is ${limit}; a room of ${size} needs at least ${size + SPARE_FILES} (raise it)`,
    );
  }
  const adapter = await ctx.loadAdapter(name);
  const prefix = ctx.keyPrefix(`big-room-${name}`);
  const server = await ctx.startServer(name, { prefix, profile: name === 'parley' && options.cpuProf });
  let generators: Child[] = [];
  try {
    ctx.log(`${name}: preparing a room of ${size}`);
    const prepare = {
      url: server.url,
      count: size,
      groupSize: size,
      jwtSecret: ctx.jwtSecret,
      server,
    };
    const specs = await adapter.prepare(prepare);
    const connecting = performance.now();
    const started = await ctx.startGenerators(
      [server],
      name,
      specs,
      options.bigRoomGenerators,
      300_000,
      size,
      true,
    );
    generators = started.generators;
    const connected = started.connected.reduce((total, part) => total + part.connected, 0);
    const failed = started.connected.reduce((total, part) => total + part.failed, 0);
    if (connected < size) {
      throw new Error(
        `${connected} of ${size} subscribers connected within 300 s (${failed} failed` +
          `${failed > 0 ? `, first: ${started.connected.find((c) => c.firstError)?.firstError}` : ''})`,
      );
    }
    const connectSeconds = (performance.now() - connecting) / 1000;
    await ctx.waitForQuiet(name);
    ctx.log(`${name}: ${connected} subscribers connected in ${connectSeconds.toFixed(1)} s; warming up`);
    const load = {
      senders: 1,
      groupSize: size,
      ratePerClient: options.bigRoomRate,
      persistSampleEvery: 0,
      sendersPerGroup: 1,
      // A backlog of deliveries behind a slow fan-out still counts, if it arrives.
      drainMs: 10_000,
      spread: true,
    };
    await ctx.runStep([server], generators, { ...load, durationS: options.quick ? 1 : 3 });
    await ctx.settle(server);
    const step = await ctx.runStep([server], generators, { ...load, durationS: options.bigRoomDurationS });
    ctx.log(`${name}: big room of ${size}: ${ctx.describeStep(step)}`);
    return {
      subscribers: size,
      generators: generators.length,
      connected,
      connectSeconds,
      ratePerS: options.bigRoomRate,
      durationS: options.bigRoomDurationS,
      step,
    };
  } finally {
    await ctx.stopGenerators(generators);
    await server.stop(15_000);
    await deleteKeys(ctx.redis, `${prefix}*`).catch(() => undefined);
  }
}
