import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processEnv, repoRoot, runParley } from './support/cli.js';
import { TestDeployment, engineLabel } from './support/env.js';

/**
 * The README's commands, run as a user runs them: `npm start` and `npm run dev` in a copy of the
 * repository without a build (its `./data` is then the copy's own), stopped with a signal to the
 * npm process, as a process manager or a terminal sends it.
 */

let deployment: TestDeployment;
const scratch = mkdtempSync(join(tmpdir(), 'parley-start-'));
/** The repository's files without builds, data or a `.env`; node_modules (each) is the repository's. */
const clone = join(scratch, 'parley');

beforeAll(async () => {
  deployment = await TestDeployment.create();
  const skipped = new Set(['node_modules', '.git', 'dist', 'data', '.env', 'coverage']);
  cpSync(repoRoot, clone, {
    recursive: true,
    filter: (source) =>
      !relative(repoRoot, source)
        .split(sep)
        .some((part) => skipped.has(part)),
  });
  symlinkSync(join(repoRoot, 'node_modules'), join(clone, 'node_modules'), 'dir');
  // npm installs what a workspace alone needs (and could not hoist) in the workspace's folder.
  for (const workspace of ['server', 'client-sdk', 'web']) {
    const modules = join(repoRoot, workspace, 'node_modules');
    if (existsSync(modules)) symlinkSync(modules, join(clone, workspace, 'node_modules'), 'dir');
  }
});
afterAll(async () => {
  await deployment?.cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

/** An npm command in the copy, in its own process group, with only the environment given here. */
class NpmProcess {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  private constructor(readonly child: ChildProcess & { pid: number }) {
    // `exit` can come before the last of the output is read: wait for the output's end too,
    // unless a process left behind holds it open (the checks after an exit find that one).
    this.exited = new Promise((resolve) =>
      child.once('exit', (code) => {
        const late = setTimeout(() => resolve(code), 5_000);
        child.once('close', () => {
          clearTimeout(late);
          resolve(code);
        });
      }),
    );
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

  /** Resolves with the first line from now on that matches, as soon as it is read. */
  nextLine(matches: (line: string) => boolean): Promise<string> {
    const seen = this.lines.length;
    return new Promise((resolve, reject) => {
      const check = () => {
        const line = this.lines.slice(seen).find(matches);
        if (line === undefined) return;
        this.child.stdout?.off('data', check);
        this.child.stderr?.off('data', check);
        resolve(line);
      };
      this.child.stdout?.on('data', check);
      this.child.stderr?.on('data', check);
      // Once the output has ended, not at `exit`: the line may still be on its way then.
      this.child.once('close', () => reject(new Error(`exited before the line:\n${this.lines.join('\n')}`)));
    });
  }

  /** The server process npm started (its only child). */
  serverPid(): number {
    const [server, ...others] = this.group().filter((entry) => entry.ppid === this.child.pid);
    if (!server || others.length > 0)
      throw new Error(`expected one child of npm: ${JSON.stringify(this.group())}`);
    return server.pid;
  }

  static run(args: string[], env: Record<string, string>): NpmProcess {
    const child = spawn('npm', args, {
      cwd: clone,
      env: processEnv({ npm_config_update_notifier: 'false', ...env }),
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: what is left of it after the test is found, and killed, by group.
      detached: true,
    });
    if (child.pid === undefined) throw new Error('npm did not start');
    return new NpmProcess(child as ChildProcess & { pid: number });
  }

  /** Ports from the servers' "listening" log lines, in order. */
  get listening(): number[] {
    const ports: number[] = [];
    for (const line of this.lines) {
      try {
        const entry = JSON.parse(line) as { url?: string };
        if (entry.url) ports.push(Number(new URL(entry.url).port));
      } catch {
        // npm's own output, or a build message.
      }
    }
    return ports;
  }

  /** The processes of this command's group (npm itself and everything it started). */
  group(): { pid: number; ppid: number; args: string }[] {
    const table = execFileSync('ps', ['-A', '-o', 'pid=,ppid=,pgid=,args='], { encoding: 'utf8' });
    return table.split('\n').flatMap((row) => {
      const match = /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(.*)$/.exec(row);
      if (!match || Number(match[3]) !== this.child.pid) return [];
      return [{ pid: Number(match[1]), ppid: Number(match[2]), args: match[4] ?? '' }];
    });
  }

  /** Whether any process of the group is still alive. */
  groupAlive(): boolean {
    try {
      process.kill(-this.child.pid, 0);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
      throw error;
    }
  }

  /** Cleanup after a failed test: nothing of the group may outlive it. */
  kill(): void {
    if (this.groupAlive()) process.kill(-this.child.pid, 'SIGKILL');
  }
}

function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

const serverEnv = () => ({
  HOST: '127.0.0.1',
  PORT: '0',
  LOG_FORMAT: 'json',
  LOG_LEVEL: 'info',
  ...(deployment.databaseUrl ? { DATABASE_URL: deployment.databaseUrl } : {}),
  ...deployment.redisEnv(),
});

describe(`the README's commands (${engineLabel})`, () => {
  it(
    '`npm start` builds and runs the compiled server as one node process under npm, keeps data in ./data at the repository root, and SIGTERM to npm drains it and leaves nothing running',
    { timeout: 180_000 },
    async () => {
      expect(existsSync(join(clone, 'server', 'dist'))).toBe(false);
      const npm = NpmProcess.run(['start'], serverEnv());
      try {
        await expect
          .poll(() => npm.listening.length > 0 || npm.child.exitCode !== null, { timeout: 150_000 })
          .toBe(true);
        const [port] = npm.listening;
        expect(port, npm.lines.join('\n')).toBeGreaterThan(0);
        expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);

        // npm and the server: no shell, npm workspace or TypeScript loader in between.
        const group = npm.group();
        const server = group.filter((entry) => entry.pid !== npm.child.pid);
        expect(server.map((entry) => entry.args)).toEqual(['node server/dist/server/src/cli.js start']);
        expect(server[0]?.ppid).toBe(npm.child.pid);
        if (!deployment.databaseUrl) {
          expect(existsSync(join(clone, 'data', 'pglite'))).toBe(true);
          expect(existsSync(join(clone, 'server', 'data'))).toBe(false);
        }

        process.kill(npm.child.pid, 'SIGTERM');
        expect(await npm.exited).toBe(0);
        expect(npm.lines.some((line) => line.includes('"msg":"stopped"'))).toBe(true);
        expect(npm.groupAlive()).toBe(false);
        for (const { pid } of server) expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
        expect(await acceptsConnections(port ?? 0)).toBe(false);
      } finally {
        npm.kill();
      }
    },
  );

  it(
    'Ctrl-C on `npm start` (SIGINT to its whole process group, as a terminal sends it) drains the server once and leaves nothing running',
    { timeout: 180_000 },
    async () => {
      const npm = NpmProcess.run(['start'], serverEnv());
      try {
        await expect
          .poll(() => npm.listening.length > 0 || npm.child.exitCode !== null, { timeout: 150_000 })
          .toBe(true);
        const [port] = npm.listening;
        expect(port, npm.lines.join('\n')).toBeGreaterThan(0);
        // npm and the server both get it, and npm forwards its copy, which may reach the server
        // once it is draining already; the second signal below is such a copy, for certain.
        const draining = npm.nextLine((line) => line.includes('"msg":"shutting down"'));
        process.kill(-npm.child.pid, 'SIGINT');
        await draining;
        process.kill(npm.serverPid(), 'SIGINT');
        expect(await npm.exited, npm.lines.join('\n')).toBe(0);
        const messages = npm.lines.flatMap((line) => {
          try {
            return [(JSON.parse(line) as { msg: string }).msg];
          } catch {
            return [];
          }
        });
        expect(messages.filter((msg) => msg === 'shutting down')).toHaveLength(1);
        expect(messages.at(-1)).toBe('stopped');
        expect(npm.groupAlive()).toBe(false);
        expect(await acceptsConnections(port ?? 0)).toBe(false);
      } finally {
        npm.kill();
      }
    },
  );

  it(
    '`npm run dev` restarts the server when a source file changes, and SIGTERM to npm leaves nothing running',
    { timeout: 180_000 },
    async () => {
      const npm = NpmProcess.run(['run', 'dev'], serverEnv());
      try {
        await expect
          .poll(() => npm.listening.length > 0 || npm.child.exitCode !== null, { timeout: 120_000 })
          .toBe(true);
        expect(npm.listening, npm.lines.join('\n')).toHaveLength(1);
        appendFileSync(join(clone, 'server', 'src', 'health.ts'), '\n// changed while running\n');
        // The restarted server takes DATA_DIR's lock only once the old one has let it go.
        await expect
          .poll(() => npm.listening.length > 1 || npm.child.exitCode !== null, { timeout: 120_000 })
          .toBe(true);
        expect(npm.listening, npm.lines.join('\n')).toHaveLength(2);
        const port = npm.listening[1] ?? 0;
        expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);

        process.kill(npm.child.pid, 'SIGTERM');
        await npm.exited;
        await expect.poll(() => npm.groupAlive(), { timeout: 30_000 }).toBe(false);
        expect(await acceptsConnections(port)).toBe(false);
      } finally {
        npm.kill();
      }
    },
  );
});

describe('settings from .env', () => {
  it(
    'reads .env from the working directory beneath set variables, and over the --config file',
    { timeout: 120_000 },
    async () => {
      const cwd = mkdtempSync(join(scratch, 'dotenv-'));
      writeFileSync(
        join(cwd, '.env'),
        [
          '# as copied from .env.example, then edited',
          'DATA_DIR=from-dotenv',
          'LOG_FORMAT=json',
          'LOG_LEVEL=warn',
          'JWT_ACCESS_TTL=soon',
          'REDIS_PREFIX=',
          'SOME_OTHER_TOOL=ignored',
          '',
        ].join('\n'),
      );
      const messages = (stdout: string) =>
        stdout
          .split('\n')
          .filter(Boolean)
          .map((line) => (JSON.parse(line) as { msg: string }).msg);

      // .env is read: its bad JWT_ACCESS_TTL stops the start; keys Parley does not know are ignored.
      const refused = await runParley(['migrate'], {}, 60_000, cwd);
      expect(refused.code).toBe(78);
      expect(refused.stderr).toContain('JWT_ACCESS_TTL');
      expect(refused.stderr).not.toContain('SOME_OTHER_TOOL');

      // A set variable wins over .env; the rest of .env applies (DATA_DIR, the quiet log level).
      const quiet = await runParley(['migrate'], { JWT_ACCESS_TTL: '15m' }, 60_000, cwd);
      expect(quiet.code, quiet.stderr).toBe(0);
      expect(messages(quiet.stdout)).not.toContain('migrations applied');
      expect(existsSync(join(cwd, 'from-dotenv', 'pglite'))).toBe(true);
      const loud = await runParley(['migrate'], { JWT_ACCESS_TTL: '15m', LOG_LEVEL: 'info' }, 60_000, cwd);
      expect(loud.code, loud.stderr).toBe(0);
      expect(messages(loud.stdout)).toContain('migrations applied');

      // .env wins over the --config file, which fills in what .env leaves unset.
      const file = join(cwd, 'parley.json');
      writeFileSync(
        file,
        JSON.stringify({ JWT_ACCESS_TTL: '15m', JWT_REFRESH_TTL: 'later', DATA_DIR: 'from-config' }),
      );
      const layered = await runParley(['migrate', '--config', file], {}, 60_000, cwd);
      expect(layered.code).toBe(78);
      expect(layered.stderr).toContain('JWT_ACCESS_TTL');
      expect(layered.stderr).toContain('JWT_REFRESH_TTL');
      expect(existsSync(join(cwd, 'from-config'))).toBe(false);
    },
  );
});
