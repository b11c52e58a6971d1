import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Every child still running, so the runner can kill them all on any exit path. */
const live = new Set<ChildProcess>();

function killAllNow(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}
process.on('exit', killAllNow);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAllNow();
    process.exit(130);
  });
}

type FromChild =
  | { kind: 'ready'; info: Record<string, unknown> }
  | { kind: 'reply'; id: number; ok: true; value: unknown }
  | { kind: 'reply'; id: number; ok: false; error: string };

export interface Child<Ready = Record<string, unknown>> {
  name: string;
  pid: number;
  ready: Ready;
  /** Calls a handler registered with `serveCalls` in the child. */
  call<T>(method: string, params?: unknown, timeoutMs?: number): Promise<T>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  env?: Record<string, string>;
  /** Extra Node flags, e.g. `--cpu-prof`. */
  nodeFlags?: string[];
  readyTimeoutMs?: number;
}

/** Forks a TypeScript entry point (run through tsx) and waits for it to say it is ready. */
export async function startChild<Ready = Record<string, unknown>>(
  name: string,
  entry: URL,
  options: StartOptions = {},
): Promise<Child<Ready>> {
  const child = fork(fileURLToPath(entry), [], {
    execArgv: ['--import', 'tsx', '--expose-gc', ...(options.nodeFlags ?? [])],
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  live.add(child);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      live.delete(child);
      resolve();
    });
  });
  let nextId = 1;
  const waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  let readyResolve: (info: Ready) => void = () => undefined;
  let readyReject: (error: Error) => void = () => undefined;
  const readyPromise = new Promise<Ready>((resolve, reject) => {
    readyResolve = resolve;
    readyReject = reject;
  });
  child.on('message', (raw) => {
    const message = raw as FromChild;
    if (message.kind === 'ready') {
      readyResolve(message.info as Ready);
      return;
    }
    const pending = waiting.get(message.id);
    if (!pending) return;
    waiting.delete(message.id);
    if (message.ok) pending.resolve(message.value);
    else pending.reject(new Error(`${name}: ${message.error}`));
  });
  child.once('exit', (code, signal) => {
    const error = new Error(`${name} exited (${signal ?? code})`);
    readyReject(error);
    for (const pending of waiting.values()) pending.reject(error);
    waiting.clear();
  });

  const stop = async (graceMs = 5000) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };

  const readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    const ready = await Promise.race([
      readyPromise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${name} not ready after ${readyTimeoutMs} ms`)),
          readyTimeoutMs,
        );
      }),
    ]);
    return {
      name,
      pid: child.pid ?? -1,
      ready,
      stop,
      call<T>(method: string, params?: unknown, timeoutMs = 600_000): Promise<T> {
        const id = nextId++;
        return new Promise<T>((resolve, reject) => {
          const timeout = setTimeout(() => {
            waiting.delete(id);
            reject(new Error(`${name}: ${method} took longer than ${timeoutMs} ms`));
          }, timeoutMs);
          waiting.set(id, {
            resolve: (value) => {
              clearTimeout(timeout);
              resolve(value as T);
            },
            reject: (error) => {
              clearTimeout(timeout);
              reject(error);
            },
          });
          child.send({ kind: 'call', id, method, params });
        });
      },
    };
  } catch (error) {
    await stop(1000);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

// ---- child side ----

type Handler = (params: never) => unknown;

/** In a child: answers `call`s from the runner, and exits when the runner goes away. */
export function serveCalls(handlers: Record<string, Handler>): void {
  process.on('disconnect', () => process.exit(0));
  process.on('message', (raw) => {
    const message = raw as { kind: string; id: number; method: string; params: unknown };
    if (message.kind !== 'call') return;
    const handler = handlers[message.method];
    const reply = (value: Record<string, unknown>) =>
      process.send?.({ kind: 'reply', id: message.id, ...value });
    if (!handler) {
      reply({ ok: false, error: `no handler ${message.method}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(message.params as never))
      .then(
        (value) => reply({ ok: true, value: value ?? null }),
        (error: unknown) =>
          reply({
            ok: false,
            error: error instanceof Error ? (error.stack ?? error.message) : String(error),
          }),
      );
  });
}

export function announceReady(info: Record<string, unknown>): void {
  process.send?.({ kind: 'ready', info });
}

/**
 * Common handlers every server child offers: a full GC before a memory reading, and the event
 * loop's busy/idle time (busy near 100% while the process gets less than a core means other
 * processes are taking the CPU it needs).
 */
export const gcHandler = {
  loop: () => {
    const { idle, active } = performance.eventLoopUtilization();
    return { idle, active };
  },
  /** Two full collections, then the process's RSS and the JavaScript heap still in use. */
  gc: () => {
    const collect = (globalThis as { gc?: () => void }).gc;
    collect?.();
    collect?.();
    const { rss, heapUsed } = process.memoryUsage();
    return { rss, heapUsed };
  },
};
