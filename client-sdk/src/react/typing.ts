/**
 * Who is typing where. Typing events are ephemeral (never replayed), so they are kept apart from
 * the query cache: each entry lasts until the `until` the server gave it, or until that user's
 * next message arrives.
 */
export class TypingStore {
  private readonly byConversation = new Map<string, Map<string, number>>();
  private readonly listeners = new Set<() => void>();
  private readonly snapshots = new Map<string, readonly string[]>();
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly now: () => number = Date.now) {}

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** The users typing in a conversation now, in the order they started; a stable array per state. */
  typing(conversationId: string): readonly string[] {
    return this.snapshots.get(conversationId) ?? EMPTY;
  }

  start(conversationId: string, userId: string, until: Date): void {
    const users = this.byConversation.get(conversationId) ?? new Map<string, number>();
    this.byConversation.set(conversationId, users);
    users.set(userId, until.getTime());
    this.changed(conversationId);
  }

  stop(conversationId: string, userId: string): void {
    if (this.byConversation.get(conversationId)?.delete(userId)) this.changed(conversationId);
  }

  clear(): void {
    this.byConversation.clear();
    for (const id of [...this.snapshots.keys()]) this.changed(id);
  }

  private changed(conversationId: string): void {
    const users = this.byConversation.get(conversationId);
    const now = this.now();
    for (const [userId, until] of users ?? []) if (until <= now) users?.delete(userId);
    if (!users || users.size === 0) {
      this.byConversation.delete(conversationId);
      this.snapshots.delete(conversationId);
    } else {
      this.snapshots.set(conversationId, [...users.keys()]);
    }
    this.schedule();
    for (const listener of [...this.listeners]) listener();
  }

  /** One timer, for the entry that expires first. */
  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    let next = Infinity;
    let conversation: string | null = null;
    for (const [id, users] of this.byConversation) {
      for (const until of users.values()) {
        if (until < next) {
          next = until;
          conversation = id;
        }
      }
    }
    if (conversation === null) return;
    const id = conversation;
    this.timer = setTimeout(() => this.changed(id), Math.max(0, next - this.now()) + 10);
  }
}

const EMPTY: readonly string[] = Object.freeze([]);
