import { NotFound, Unavailable } from '../errors.js';
import type { Durability } from '../messages/store.js';

interface Waiter {
  resolve(): void;
  reject(error: Error): void;
}

/**
 * Who waits for which stream entry to reach PostgreSQL, told by the in-process worker
 * (`PersistHooks.onWritten`, `onDeadLetter`). With the in-process broker the stream dies with
 * the process, so a change is acknowledged only once this says it is written.
 */
export class WrittenEntries implements Durability {
  private readonly waiting = new Map<string, Set<Waiter>>();

  constructor(
    /** How long a call waits before it answers that its change may or may not be stored. */
    private readonly timeoutMs: number,
  ) {}

  untilWritten(entryId: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let waiters = this.waiting.get(entryId);
      if (!waiters) {
        waiters = new Set();
        this.waiting.set(entryId, waiters);
      }
      const timer = setTimeout(() => {
        this.forget(entryId, waiter);
        // Still queued: the worker may write it after all, so the outcome is unknown.
        reject(
          new Unavailable(`Stream entry ${entryId} was not written within ${this.timeoutMs} ms`, {
            outcomeUnknown: true,
          }),
        );
      }, this.timeoutMs);
      timer.unref();
      const waiter: Waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      waiters.add(waiter);
    });
  }

  /** The worker committed these entries (and released their pending copies). */
  markWritten(entryIds: readonly string[]): void {
    for (const entryId of entryIds) {
      const waiters = this.waiting.get(entryId);
      if (!waiters) continue;
      this.waiting.delete(entryId);
      for (const waiter of waiters) waiter.resolve();
    }
  }

  /**
   * The worker moved this entry to the dead-letter stream, for `reason` (PostgreSQL's refusal):
   * its change is not stored.
   */
  markDeadLettered(entryId: string, reason: string): void {
    const waiters = this.waiting.get(entryId);
    if (!waiters) return;
    this.waiting.delete(entryId);
    for (const waiter of waiters) waiter.reject(refusal(entryId, reason));
  }

  private forget(entryId: string, waiter: Waiter): void {
    const waiters = this.waiting.get(entryId);
    waiters?.delete(waiter);
    if (waiters?.size === 0) this.waiting.delete(entryId);
  }
}

/**
 * What the caller of a change PostgreSQL refused is told. A conversation deleted while the change
 * was on its way is gone for the caller too (the refusal is the one migration 0001's trigger
 * raises); anything else is the server's failure, since the change passed every check before.
 */
function refusal(entryId: string, reason: string): Error {
  if (reason.endsWith('violates foreign key: no such conversation')) return new NotFound('Conversation');
  return new Error(`Stream entry ${entryId} was refused by the database (dead-lettered): ${reason}`);
}
