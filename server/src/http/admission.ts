/**
 * Open WebSocket connections per holder (a user, a client address) on this instance, each
 * holder capped. Kept in this process only: a socket costs the instance that holds it, and the
 * `events` streams on those sockets are capped across instances in the broker.
 */
export class SocketCounts {
  private readonly open = new Map<string, number>();

  /** Counts one more connection of `holder`, unless it already holds `max`. */
  take(holder: string, max: number): boolean {
    const current = this.open.get(holder) ?? 0;
    if (current >= max) return false;
    this.open.set(holder, current + 1);
    return true;
  }

  /**
   * Counts one more connection of `holder` until `socket` closes, unless it already holds `max`.
   * The release is made here rather than where the socket was accepted: a closure made there
   * would keep that whole scope (the upgrade's request, its headers and URL) for as long as the
   * socket is open.
   */
  takeUntilClosed(
    holder: string,
    max: number,
    socket: { once(event: 'close', listener: () => void): unknown },
  ): boolean {
    if (!this.take(holder, max)) return false;
    socket.once('close', () => this.give(holder));
    return true;
  }

  /** One connection of `holder` closed. */
  give(holder: string): void {
    const current = this.open.get(holder) ?? 0;
    if (current <= 1) this.open.delete(holder);
    else this.open.set(holder, current - 1);
  }

  count(holder: string): number {
    return this.open.get(holder) ?? 0;
  }
}
