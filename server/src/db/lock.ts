import { randomUUID } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** Another live process holds the data directory. */
export class DataDirLocked extends Error {
  override name = 'DataDirLocked';
}

export interface DataDirLock {
  readonly path: string;
  /** Removes the lock file, if it is still this process's. */
  release(): void;
}

interface Holder {
  pid: number;
  /** `performance.timeOrigin` of the holding process: tells it from a later one with its pid. */
  started: number;
}

const LOCK_FILE = 'parley.lock';

/**
 * Takes the data directory for this process alone. Two processes on one embedded database
 * would both accept writes, and each would overwrite the other's files.
 *
 * The lock is a file naming its holder's pid, put in place with link(2), which fails when the
 * file exists and shows it only once complete. A holder that died without removing it (a
 * SIGKILL) no longer runs, so its file is taken over; Node has no flock(2), and a file is what
 * works on every platform it runs on.
 */
export function lockDataDir(dataDir: string): DataDirLock {
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  const mine = JSON.stringify({ pid: process.pid, started: performance.timeOrigin } satisfies Holder);
  const draft = join(dir, `${LOCK_FILE}.${process.pid}.${randomUUID()}`);
  writeFileSync(draft, mine);
  try {
    // Each turn either takes the lock, refuses, or clears a dead holder's file and tries again.
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        linkSync(draft, path);
        return { path, release: () => release(path, mine) };
      } catch (error) {
        if (codeOf(error) !== 'EEXIST') throw error;
      }
      const seen = readIfExists(path);
      if (seen === null) continue;
      const holder = parseHolder(seen);
      if (holder && isRunning(holder)) {
        const who = holder.pid === process.pid ? 'this process' : `another process (pid ${holder.pid})`;
        throw new DataDirLocked(
          `DATA_DIR ${dir} is in use by ${who}. Stop it first: two processes on one embedded database would both accept writes and lose each other's data. If no such process is running, remove ${path}.`,
        );
      }
      clearStale(path, seen, draft);
    }
    throw new DataDirLocked(`Could not lock DATA_DIR ${dir}: ${path} keeps changing`);
  } finally {
    unlinkSync(draft);
  }
}

/**
 * Moves a dead holder's file aside and removes it. Two processes may judge the same file stale
 * at once: the one that moves aside the other's fresh lock instead puts it back.
 */
function clearStale(path: string, seen: string, draft: string): void {
  const aside = `${draft}.stale`;
  try {
    renameSync(path, aside);
  } catch (error) {
    if (codeOf(error) === 'ENOENT') return;
    throw error;
  }
  try {
    if (readFileSync(aside, 'utf8') !== seen) linkSync(aside, path);
  } catch (error) {
    // Another process took the lock meanwhile; the file put aside was a lock it replaced.
    if (codeOf(error) !== 'EEXIST') throw error;
  } finally {
    unlinkSync(aside);
  }
}

function release(path: string, mine: string): void {
  try {
    if (readFileSync(path, 'utf8') === mine) unlinkSync(path);
  } catch (error) {
    if (codeOf(error) !== 'ENOENT') throw error;
  }
}

function isRunning(holder: Holder): boolean {
  // A restarted container often gets the same pid: only this very process counts as itself.
  if (holder.pid === process.pid) return holder.started === performance.timeOrigin;
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (error) {
    // EPERM: it runs, under another user.
    return codeOf(error) === 'EPERM';
  }
}

function parseHolder(text: string): Holder | null {
  try {
    const value = JSON.parse(text) as Partial<Holder>;
    return Number.isInteger(value.pid) && (value.pid ?? 0) > 0 && typeof value.started === 'number'
      ? { pid: value.pid ?? 0, started: value.started }
      : null;
  } catch {
    return null;
  }
}

function readIfExists(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    if (codeOf(error) === 'ENOENT') return null;
    throw error;
  }
}

function codeOf(error: unknown): unknown {
  return (error as { code?: unknown } | null)?.code;
}
