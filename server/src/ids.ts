import { randomFillSync } from 'node:crypto';

/**
 * Random bytes drawn in blocks: one `randomFillSync` serves 256 ids. Drawn 16 bytes at a time
 * through `crypto.getRandomValues`, they cost about 5 µs an id, a sizable part of a send; from
 * the block an id costs about 0.5 µs. Node's `randomUUID` keeps such a block too.
 */
const POOL_BYTES = 16 * 256;
const pool = Buffer.allocUnsafe(POOL_BYTES);
let used = POOL_BYTES;

/** Two hex digits for every byte value. */
const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'));

/**
 * A UUIDv7 (RFC 9562 §5.7): 48 bits of Unix time in milliseconds, then a 32-bit counter (RFC
 * 9562 §6.2, method 1) seeded at random in each new millisecond and counted up within it, then
 * random bits. Ids made by one process sort in the order they were made, even within one
 * millisecond or when the clock steps back: the counter goes on under the last millisecond
 * seen, and a counter that wraps moves that millisecond on by one. The layout is the `uuid`
 * package's `v7()`.
 */
export const uuidv7: () => string = uuidv7Source(Date.now);

/** A maker of UUIDv7s (see `uuidv7`) with its own clock and its own order. */
export function uuidv7Source(clock: () => number): () => string {
  let lastMs = -Infinity;
  let counter = 0;
  return () => {
    const now = clock();
    if (used === POOL_BYTES) {
      randomFillSync(pool);
      used = 0;
    }
    const at = used;
    used += 16;
    const random = (index: number) => pool[at + index] as number;
    if (now > lastMs) {
      counter = ((random(0) & 0x7f) << 24) | (random(1) << 16) | (random(2) << 8) | random(3);
      lastMs = now;
    } else {
      counter = (counter + 1) | 0;
      if (counter === 0) lastMs += 1;
    }
    const ms = lastMs;
    const bytes = [
      (ms / 0x10000000000) & 0xff,
      (ms / 0x100000000) & 0xff,
      (ms / 0x1000000) & 0xff,
      (ms / 0x10000) & 0xff,
      (ms / 0x100) & 0xff,
      ms & 0xff,
      0x70 | ((counter >>> 28) & 0x0f),
      (counter >>> 20) & 0xff,
      0x80 | ((counter >>> 14) & 0x3f),
      (counter >>> 6) & 0xff,
      ((counter << 2) & 0xff) | (random(4) & 0x03),
      random(5),
      random(6),
      random(7),
      random(8),
      random(9),
    ].map((byte) => HEX[byte] as string);
    return (
      `${bytes[0]}${bytes[1]}${bytes[2]}${bytes[3]}-${bytes[4]}${bytes[5]}-${bytes[6]}${bytes[7]}-` +
      `${bytes[8]}${bytes[9]}-${bytes[10]}${bytes[11]}${bytes[12]}${bytes[13]}${bytes[14]}${bytes[15]}`
    );
  };
}
