import { type Partition, refreshSuccessorKey, revokedSessionKey, revokedUserKey } from '../keyspace.js';
import type { SessionHolder, SessionStore } from '../ports/sessions.js';
import type { RedisConnection } from './connection.js';

/** Holders checked per command by `revokedAmong` (two keys each). */
const HOLDERS_PER_COMMAND = 500;

/**
 * Each mark and successor is a plain key, expiring. The send's script reads the marks by key,
 * so they are set in every partition (on a cluster, in each partition's hash slot); the checks
 * here read the first partition's.
 */
export class RedisSessions implements SessionStore {
  constructor(private readonly redis: RedisConnection) {}

  async revokeSession(sessionId: string, forMs: number): Promise<void> {
    await this.everywhere((p) => revokedSessionKey(p, sessionId), '1', forMs);
  }

  async revokeUserBefore(userId: string, at: number, forMs: number): Promise<void> {
    await this.everywhere((p) => revokedUserKey(p, userId), String(at), forMs);
  }

  /** Sets the key in every partition. */
  private async everywhere(key: (p: Partition) => string, value: string, forMs: number): Promise<void> {
    await this.redis.run(() =>
      Promise.all(
        this.redis.partitions.map((p) => this.redis.client.set(this.redis.key(key(p)), value, 'PX', forMs)),
      ),
    );
  }

  async revokedAmong(holders: readonly SessionHolder[]): Promise<boolean[]> {
    const revoked: boolean[] = [];
    for (let start = 0; start < holders.length; start += HOLDERS_PER_COMMAND) {
      const batch = holders.slice(start, start + HOLDERS_PER_COMMAND);
      const keys = batch.flatMap((holder) => [
        this.redis.key(revokedSessionKey(this.redis.partition(0), holder.sessionId)),
        this.redis.key(revokedUserKey(this.redis.partition(0), holder.userId)),
      ]);
      const marks = await this.marks(keys);
      batch.forEach((holder, i) => {
        const before = marks[i * 2 + 1];
        revoked.push(marks[i * 2] != null || (before != null && Number(before) >= holder.issuedAt));
      });
    }
    return revoked;
  }

  /** The value of each key: one MGET on a single server, one per hash slot group on a cluster. */
  private async marks(keys: string[]): Promise<(string | null)[]> {
    const groups = this.redis.together(keys, (key) => key);
    if (groups.length === 1) return this.redis.run(() => this.redis.client.mget(keys));
    const values = new Map<string, string | null>();
    await this.redis.run(() =>
      Promise.all(
        groups.map(async (group) => {
          const found = await this.redis.client.mget(group);
          group.forEach((key, i) => values.set(key, found[i] ?? null));
        }),
      ),
    );
    return keys.map((key) => values.get(key) ?? null);
  }

  async keepSuccessor(tokenHash: string, sealed: string, forMs: number): Promise<void> {
    await this.redis.run(() =>
      this.redis.client.set(this.redis.key(refreshSuccessorKey(tokenHash)), sealed, 'PX', forMs),
    );
  }

  successor(tokenHash: string): Promise<string | null> {
    return this.redis.run(() => this.redis.client.get(this.redis.key(refreshSuccessorKey(tokenHash))));
  }
}
