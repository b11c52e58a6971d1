import { typingKey } from '../keyspace.js';
import type { TypingClaims } from '../ports/typing.js';
import type { RedisConnection } from './connection.js';

/** A claim is a key set only when absent, expiring with the claim. */
export class RedisTyping implements TypingClaims {
  constructor(private readonly redis: RedisConnection) {}

  async claim(conversationId: string, userId: string, holdMs: number): Promise<boolean> {
    const answer = await this.redis.run(() =>
      this.redis.client.set(this.redis.key(typingKey(conversationId, userId)), '1', 'PX', holdMs, 'NX'),
    );
    return answer === 'OK';
  }
}
