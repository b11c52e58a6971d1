import type { TypingClaims } from '../ports/typing.js';
import { ExpiringMap } from './expiring.js';

/** Typing claims of the in-process engine: the slots held, by conversation and user, until they lapse. */
export class MemoryTyping implements TypingClaims {
  private readonly held = new ExpiringMap<true>();

  claim(conversationId: string, userId: string, holdMs: number): Promise<boolean> {
    const slot = `${conversationId}\n${userId}`;
    const now = Date.now();
    if (this.held.get(slot, now)) return Promise.resolve(false);
    this.held.set(slot, true, now + holdMs);
    return Promise.resolve(true);
  }
}
