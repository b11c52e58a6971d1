import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { vi } from 'vitest';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
/**
 * The CLI's source. Tests run it through tsx's loader, so they test the code as it is now, never
 * a stale server/dist, in one process (a signal reaches the server itself).
 */
export const parleySource = fileURLToPath(new URL('../../server/src/cli.ts', import.meta.url));
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/** Node's arguments for `parley <args>` from the sources. */
export function parleyArgv(args: string[]): string[] {
  return ['--import', tsxLoader, parleySource, ...args];
}

/**
 * The working directory of CLI processes: an empty one, so a developer's `.env` in the
 * repository never reaches them (the CLI reads `.env` from its working directory). It lives
 * under node_modules, so it is never committed and goes with the next clean install.
 */
export function cliCwd(): string {
  const dir = join(repoRoot, 'node_modules', '.cache', 'parley-cli-cwd');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** The environment a CLI process gets: only what is given here, plus PATH and HOME. */
export function processEnv(env: Record<string, string>): Record<string, string> {
  const base: Record<string, string> = {};
  for (const key of ['PATH', 'HOME', 'TMPDIR']) {
    const value = process.env[key];
    if (value) base[key] = value;
  }
  return { ...base, ...env };
}

/** Runs `parley <args>` to completion. */
export function runParley(
  args: string[],
  env: Record<string, string>,
  timeoutMs = 60_000,
  cwd = cliCwd(),
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, parleyArgv(args), {
      cwd,
      env: processEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`parley ${args.join(' ')} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A long-running `parley start` / `parley worker` process. */
export class ParleyProcess {
  readonly lines: string[] = [];
  private exited: Promise<number | null>;
  private constructor(
    readonly args: string[],
    private readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    let partial = '';
    const collect = (chunk: Buffer) => {
      partial += chunk.toString();
      const parts = partial.split('\n');
      partial = parts.pop() ?? '';
      this.lines.push(...parts.filter(Boolean));
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
  }

  /** Starts `parley <args>` and waits until it logs that it serves (its URL is then known). */
  static async start(
    args: string[],
    env: Record<string, string>,
    timeoutMs = 60_000,
  ): Promise<ParleyProcess> {
    const child = spawn(process.execPath, parleyArgv(args), {
      cwd: cliCwd(),
      env: processEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const started = new ParleyProcess(args, child);
    // Done once it serves, or once it has exited: then it never will.
    await vi
      .waitFor(
        () => {
          if (started.port === null && child.exitCode === null) throw new Error('not serving yet');
        },
        { timeout: timeoutMs, interval: 50 },
      )
      .catch(() => undefined);
    if (started.port === null) {
      child.kill('SIGKILL');
      throw new Error(`parley ${args.join(' ')} did not start:\n${started.lines.join('\n')}`);
    }
    return started;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The HTTP port from the startup log line (API: /trpc and /ws; worker: ops endpoints). */
  get port(): number | null {
    for (const line of this.lines) {
      try {
        const entry = JSON.parse(line) as { url?: string; port?: number };
        if (entry.url) return Number(new URL(entry.url).port);
        if (typeof entry.port === 'number') return entry.port;
      } catch {
        // Not a log line (e.g. a runtime warning).
      }
    }
    return null;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port ?? 0}`;
  }

  /** Sends `signal` and waits for the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}
