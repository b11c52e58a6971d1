import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { schema } from '../../../drizzle/schema.js';
import { type DataDirLock, lockDataDir } from './lock.js';

export type Schema = typeof schema;
/** The one database type every service uses, whichever engine is underneath. */
export type Database = PgDatabase<PgQueryResultHKT, Schema>;

export interface DatabaseHandle {
  db: Database;
  engine: 'postgres' | 'pglite';
  /** Applies pending migrations; several instances may call this at once. */
  migrate(): Promise<void>;
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export const migrationsFolder = fileURLToPath(new URL('../../../drizzle/migrations', import.meta.url));

/** Any constant works; it only has to be the same for every Parley instance. */
const MIGRATION_LOCK_KEY = 0x7061726c; // "parl"

export async function openDatabase(options: {
  url: string | undefined;
  dataDir: string;
}): Promise<DatabaseHandle> {
  return options.url ? openPostgres(options.url) : openPglite(options.dataDir);
}

async function openPostgres(url: string): Promise<DatabaseHandle> {
  const { default: postgres } = await import('postgres');
  const { drizzle } = await import('drizzle-orm/postgres-js');
  const { migrate } = await import('drizzle-orm/postgres-js/migrator');
  const client = postgres(url, {
    max: 10,
    onnotice: () => {},
    connect_timeout: 5,
    // Keeps a dead server from stalling a request forever; the worker retries.
    idle_timeout: 30,
  });
  // drizzle runs every query through `unsafe`, which postgres.js leaves unprepared unless told:
  // each query with parameters then costs two round trips (describe, then execute) and a fresh
  // parse and plan in PostgreSQL. Prepared, a query text is described and planned once per
  // connection and then sent in one round trip. The texts are drizzle's for a fixed set of
  // queries (an id list gives one text per length), and postgres.js renews each connection,
  // with its statements, within an hour.
  const preparing = new Proxy(client, {
    get(target, property, receiver) {
      if (property !== 'unsafe') return Reflect.get(target, property, receiver) as unknown;
      return (query: string, parameters?: unknown[], options?: { prepare?: boolean }) =>
        target.unsafe(query, parameters as never, { ...options, prepare: (parameters?.length ?? 0) > 0 });
    },
  });
  const db = drizzle(preparing, { schema });
  return {
    db,
    engine: 'postgres',
    async migrate() {
      // A session-level advisory lock on a reserved connection serialises instances that
      // start together; the migrator itself then runs on the pool.
      const reserved = await client.reserve();
      try {
        await reserved`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
        await migrate(db, { migrationsFolder });
      } finally {
        await reserved`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.catch(() => undefined);
        reserved.release();
      }
    },
    ping: () => pingDatabase(db),
    async close() {
      await client.end({ timeout: 5 });
    },
  };
}

async function openPglite(dataDir: string): Promise<DatabaseHandle> {
  const { PGlite } = await import('@electric-sql/pglite');
  const { drizzle } = await import('drizzle-orm/pglite');
  const { migrate } = await import('drizzle-orm/pglite/migrator');
  // `memory://` keeps everything in memory (tests); anything else is a folder on disk, which
  // this process takes for itself before PGlite opens its files in it (`pglite/`).
  const inMemory = dataDir.startsWith('memory://');
  const lock: DataDirLock | null = inMemory ? null : lockDataDir(dataDir);
  let client: InstanceType<typeof PGlite>;
  try {
    if (inMemory) {
      client = new PGlite();
    } else {
      const folder = `${dataDir.replace(/\/$/, '')}/pglite`;
      mkdirSync(folder, { recursive: true });
      client = new PGlite(folder);
    }
    await client.waitReady;
  } catch (error) {
    lock?.release();
    throw error;
  }
  const db = drizzle(client, { schema });
  return {
    db,
    engine: 'pglite',
    async migrate() {
      // PGlite has a single connection per process, so the lock is only for symmetry.
      await migrate(db, { migrationsFolder });
    },
    ping: () => pingDatabase(db),
    async close() {
      try {
        await client.close();
      } finally {
        // Last of all: a process still draining keeps the directory to itself until here.
        lock?.release();
      }
    },
  };
}

async function pingDatabase(db: Database): Promise<boolean> {
  try {
    await db.execute(sql`select 1`);
    return true;
  } catch {
    return false;
  }
}
