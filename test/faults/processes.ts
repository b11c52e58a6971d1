import { type ChildProcess, spawn } from 'node:child_process';
import { cliCwd, parleyArgv } from '../support/cli.js';

// The CLI's sources run through tsx's loader in one process: a SIGKILL hits the server itself,
// not a launcher whose child would live on.

/** A `parley` process, which a scenario can SIGKILL. */
export class ParleyProcess {
  readonly output: string[] = [];
  readonly exited: Promise<number | null>;
  /** `http://host:port` once a `start` process listens. */
  readonly url: Promise<string>;

  private constructor(readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    this.url = new Promise((resolve, reject) => {
      const onLine = (line: string) => {
        const match = /"url":"(http:\/\/[^"]+)"/.exec(line);
        if (match?.[1]) resolve(match[1]);
      };
      for (const stream of [child.stdout, child.stderr]) {
        stream?.setEncoding('utf8');
        stream?.on('data', (chunk: string) => {
          for (const line of chunk.split('\n').filter(Boolean)) {
            this.output.push(line);
            onLine(line);
          }
        });
      }
      void this.exited.then((code) =>
        reject(new Error(`parley exited (${code}):\n${this.output.join('\n')}`)),
      );
    });
    // A scenario that fails early must not leave the url promise unhandled.
    this.url.catch(() => undefined);
  }

  /** Runs `parley <command>` with only the given environment (plus PATH and HOME). */
  static spawn(command: 'start' | 'worker', env: Record<string, string>): ParleyProcess {
    const child = spawn(process.execPath, parleyArgv([command]), {
      cwd: cliCwd(),
      // JSON logs: the url is read from the "listening" line.
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        LOG_LEVEL: 'info',
        LOG_FORMAT: 'json',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new ParleyProcess(child);
  }

  /** SIGKILL: no shutdown code runs, as when a machine dies or the kernel kills it. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}
