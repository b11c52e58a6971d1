import { startRedisCluster } from './redis-cluster.js';
import { hasRedisServer } from './redis-server.js';

/**
 * `npm run test:cluster`: starts a three-master Redis Cluster of the run's own and points every
 * test file at it (`TEST_REDIS_URL` one of its nodes, `TEST_REDIS_CLUSTER=on`), its deployments
 * split into three partitions (`TEST_REDIS_PARTITIONS`, unless set); stopped after.
 */
export default async function clusterSetup(): Promise<() => Promise<void>> {
  if (!hasRedisServer()) {
    throw new Error(
      'npm run test:cluster needs redis-server and redis-cli installed, to start a Redis Cluster',
    );
  }
  const cluster = await startRedisCluster();
  const node = cluster.nodes[0];
  if (!node) throw new Error('the Redis Cluster has no node');
  process.env.TEST_REDIS_URL = `redis://${node.host}:${node.port}`;
  process.env.TEST_REDIS_CLUSTER = 'on';
  // Sends spread over the masters, as a deployment on a cluster runs (`REDIS_PARTITIONS`).
  process.env.TEST_REDIS_PARTITIONS ??= '3';
  return () => cluster.stop();
}
