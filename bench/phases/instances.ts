/**
 * Several Parley instances (processes) on one Redis and one PostgreSQL, clients spread
 * round-robin over them, under W1's clients and groups. Each instance's `/metrics` says how many
 * events it took from Redis Pub/Sub and how many it handed to local subscriptions.
 */
import type { Child } from '../lib/children.js';
import { ProcMonitor } from '../lib/proc.js';
import { scrape, sumOf } from '../lib/prometheus.js';
import { deleteKeys } from '../lib/redis.js';
import type { InstancesResult } from '../results-types.js';
import type { PhaseContext, ServerProcess } from './context.js';

/** Events an instance received from Redis Pub/Sub (being added to Parley). */
export const PUBSUB_RECEIVED = 'parley_pubsub_received_total';
/** Events an instance handed to local subscriptions, one per subscription. */
export const FANNED_OUT = 'parley_events_fanned_out_total';

export async function benchInstances(ctx: PhaseContext): Promise<InstancesResult> {
  const { options } = ctx;
  const count = options.instances;
  // One prefix for all of them: they are one deployment.
  const prefix = ctx.keyPrefix('instances');
  const servers: ServerProcess[] = [];
  let generators: Child[] = [];
  try {
    for (let i = 0; i < count; i++) servers.push(await ctx.startServer('parley', { prefix }));
    const first = servers[0];
    if (!first) throw new Error('no instance started');
    ctx.log(`parley ×${count}: preparing ${options.clients} clients`);
    const adapter = await ctx.loadAdapter('parley');
    const specs = await adapter.prepare({
      url: first.url,
      count: options.clients,
      groupSize: options.groupSize,
      jwtSecret: ctx.jwtSecret,
      server: first,
    });
    const started = await ctx.startGenerators(
      servers,
      'parley',
      specs,
      options.generators,
      120_000,
      options.groupSize,
    );
    generators = started.generators;
    const failed = started.connected.reduce((total, part) => total + part.failed, 0);
    if (failed > 0) {
      throw new Error(
        `${failed} clients failed to connect: ${started.connected.find((c) => c.firstError)?.firstError}`,
      );
    }
    await ctx.waitForQuiet(`parley ×${count}`);
    ctx.log(`parley ×${count}: ${options.clients} clients connected round-robin; warming up`);
    const load = {
      senders: options.clients,
      groupSize: options.groupSize,
      ratePerClient: options.instancesRate,
      persistSampleEvery: 0,
    };
    await ctx.runStep(servers, generators, { ...load, durationS: options.quick ? 1 : 3 });
    for (const server of servers) await ctx.settle(server);
    const before = await Promise.all(servers.map((server) => scrape(server.url)));
    const monitors = servers.map((server) => new ProcMonitor(server.pid));
    const step = await ctx.runStep(servers, generators, { ...load, durationS: options.instancesDurationS });
    const usages = monitors.map((monitor) => monitor.stop());
    const after = await Promise.all(servers.map((server) => scrape(server.url)));
    const growth = (i: number, name: string) => {
      const end = sumOf(after[i] ?? '', name);
      return end === null ? null : end - (sumOf(before[i] ?? '', name) ?? 0);
    };
    const perInstance = servers.map((_, i) => ({
      instance: i + 1,
      clients: specs.filter((spec) => spec.index % count === i).length,
      pubsubReceived: growth(i, PUBSUB_RECEIVED),
      fannedOut: growth(i, FANNED_OUT) ?? 0,
      serverCpuPercent: usages[i]?.cpuPercent ?? 0,
    }));
    ctx.log(`parley ×${count}: ${ctx.describeStep(step)}`);
    for (const figures of perInstance) {
      ctx.log(
        `parley instance ${figures.instance}: ${figures.clients} clients, ` +
          `${figures.pubsubReceived ?? 'n/a (counter not exported)'} events from Pub/Sub, ` +
          `${figures.fannedOut} fanned out, CPU ${Math.round(figures.serverCpuPercent)}%`,
      );
    }
    return {
      instances: count,
      clients: options.clients,
      groupSize: options.groupSize,
      ratePerClient: options.instancesRate,
      durationS: options.instancesDurationS,
      step,
      perInstance,
    };
  } finally {
    await ctx.stopGenerators(generators);
    await Promise.all(servers.map((server) => server.stop(15_000)));
    await deleteKeys(ctx.redis, `${prefix}*`).catch(() => undefined);
  }
}
