import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { startRedisServer } from './redis-server.js';

const run = promisify(execFile);

/** A Redis Cluster of a test file's own: three masters on loopback, keeping nothing on disk. */
export interface LocalCluster {
  nodes: { host: string; port: number }[];
  stop(): Promise<void>;
}

/**
 * Starts three `redis-server --cluster-enabled yes` and joins them with `redis-cli --cluster
 * create` (no replicas); resolves once every node reports `cluster_state:ok`.
 */
export async function startRedisCluster(): Promise<LocalCluster> {
  // Each node keeps its cluster config (nodes.conf) in its own working directory.
  const dirs = await Promise.all([0, 1, 2].map(() => mkdtemp(join(tmpdir(), 'parley-cluster-'))));
  const servers = await Promise.all(
    dirs.map((cwd) =>
      startRedisServer({ cwd, args: ['--cluster-enabled', 'yes', '--cluster-node-timeout', '2000'] }),
    ),
  );
  const stop = async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  };
  try {
    await run('redis-cli', [
      '--cluster',
      'create',
      ...servers.map((server) => `127.0.0.1:${server.port}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ]);
    const deadline = Date.now() + 20_000;
    for (const server of servers) {
      const probe = new Redis(server.url, { lazyConnect: true });
      await probe.connect();
      try {
        for (;;) {
          const info = await probe.cluster('INFO');
          if (info.includes('cluster_state:ok')) break;
          if (Date.now() > deadline) throw new Error(`cluster node ${server.port} never became ready`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      } finally {
        probe.disconnect();
      }
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { nodes: servers.map((server) => ({ host: '127.0.0.1', port: server.port })), stop };
}
