/** Hands out stream ids (`<ms>-<n>`), each above the one before, as Redis does for a stream. */
export class IdClock {
  private lastMs = 0;
  private lastSeq = 0;
  /** The newest id handed out, `0-0` before the first. */
  newest = '0-0';

  next(): string {
    const now = Date.now();
    if (now > this.lastMs) {
      this.lastMs = now;
      this.lastSeq = 0;
    } else {
      this.lastSeq++;
    }
    this.newest = `${this.lastMs}-${this.lastSeq}`;
    return this.newest;
  }
}
