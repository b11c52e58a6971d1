import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import type { Limits } from '../config/index.js';
import { tooManyRequests } from '../limits/spend.js';

const KEY_LENGTH = 32;

function derive(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(
      password.normalize('NFKC'),
      salt,
      KEY_LENGTH,
      { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 },
      (error, key) => (error ? reject(error) : resolve(key)),
    );
  });
}

/** scrypt with N = 2^cost, r = 8, p = 1; OWASP recommends cost 17. */
export async function hashPassword(password: string, cost: number): Promise<string> {
  const salt = randomBytes(16);
  const n = 2 ** cost;
  const key = await derive(password, salt, n, 8, 1);
  return `scrypt$${n}$8$1$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, key] = stored.split('$');
  if (scheme !== 'scrypt' || !n || !r || !p || !salt || !key) return false;
  const expected = Buffer.from(key, 'base64url');
  const actual = await derive(password, Buffer.from(salt, 'base64url'), Number(n), Number(r), Number(p));
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/**
 * At most `concurrency` password hashes at once, and `queue` more waiting; any further one is
 * refused at once with TOO_MANY_REQUESTS. Without it a burst of sign-ups or sign-ins queues on
 * libuv's thread pool, where it holds up everyone else's sign-in (and every other job of that
 * pool) for as long as the burst lasts.
 */
export class HashGate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  /** Recent hashes took about this long (a moving average), to say how long to wait. */
  private averageMs = 500;

  constructor(
    private readonly concurrency: number,
    private readonly queue: number,
  ) {}

  async run<T>(hash: () => Promise<T>): Promise<T> {
    if (this.running < this.concurrency) {
      this.running += 1;
    } else if (this.waiting.length < this.queue) {
      // The finishing hash hands its place over (see below), so `running` stays as it is.
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      const waitMs = this.averageMs * (this.waiting.length / this.concurrency + 1);
      throw tooManyRequests('Too many password checks at once', waitMs);
    }
    const started = performance.now();
    try {
      return await hash();
    } finally {
      this.averageMs = 0.8 * this.averageMs + 0.2 * (performance.now() - started);
      const next = this.waiting.shift();
      if (next) next();
      else this.running -= 1;
    }
  }
}

/** Hashing and checking passwords, through the instance's `HashGate`. */
export class Passwords {
  private readonly gate: HashGate;

  constructor(
    private readonly cost: number,
    limits: Pick<Limits, 'passwordHashConcurrency' | 'passwordHashQueue'>,
  ) {
    this.gate = new HashGate(limits.passwordHashConcurrency, limits.passwordHashQueue);
  }

  hash(password: string): Promise<string> {
    return this.gate.run(() => hashPassword(password, this.cost));
  }

  verify(password: string, stored: string): Promise<boolean> {
    return this.gate.run(() => verifyPassword(password, stored));
  }
}
