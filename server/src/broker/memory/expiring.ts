/**
 * A map whose entries each expire at a time of their own: an expired entry reads as absent. It
 * is dropped when read, or in a sweep of the whole map once the map has doubled in size since the
 * last one, so entries nobody reads again do not pile up.
 */
export class ExpiringMap<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number }>();
  private sweepAtSize = 1024;

  get(key: string, now = Date.now()): V | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= now) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key: string, value: V, expiresAt: number): void {
    this.entries.set(key, { value, expiresAt });
    if (this.entries.size >= this.sweepAtSize) {
      const now = Date.now();
      for (const [name, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(name);
      this.sweepAtSize = Math.max(1024, this.entries.size * 2);
    }
  }
}
