import type { WrittenChange } from '../ports/queue.js';

/** A message's change on its way to PostgreSQL: its body, and the queue entry that carries it. */
interface Copy {
  entryId: string;
  conversationId: string;
  body: string;
}

/**
 * Pending copies of the in-process engine: the newest unwritten change of each message, found by
 * message and listed by conversation. Written by the message log, released by the queue.
 */
export class PendingCopies {
  private readonly byMessage = new Map<string, Copy>();
  private readonly byConversation = new Map<string, Set<string>>();

  keep(conversationId: string, messageId: string, entryId: string, body: string): void {
    this.byMessage.set(messageId, { entryId, conversationId, body });
    let messages = this.byConversation.get(conversationId);
    if (!messages) {
      messages = new Set();
      this.byConversation.set(conversationId, messages);
    }
    messages.add(messageId);
  }

  of(conversationId: string): string[] {
    const out: string[] = [];
    for (const messageId of this.byConversation.get(conversationId) ?? []) {
      const copy = this.byMessage.get(messageId);
      if (copy) out.push(copy.body);
    }
    return out;
  }

  find(messageId: string): Copy | null {
    return this.byMessage.get(messageId) ?? null;
  }

  /** Drops each copy that is still the one its entry wrote; returns how many. */
  release(written: readonly WrittenChange[]): number {
    let released = 0;
    for (const { entryId, messageId } of written) {
      const copy = this.byMessage.get(messageId);
      if (copy?.entryId !== entryId) continue;
      this.byMessage.delete(messageId);
      const messages = this.byConversation.get(copy.conversationId);
      messages?.delete(messageId);
      if (messages?.size === 0) this.byConversation.delete(copy.conversationId);
      released += 1;
    }
    return released;
  }
}
