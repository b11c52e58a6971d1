import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EnvSchema, loadConfig } from '../server/src/config/index.js';
import { ParleyProcess, repoRoot, runParley } from './support/cli.js';
import { TestDeployment, engineLabel, engines } from './support/env.js';

/** Files the container setup is made of; Docker cannot run here, so they are read and tried. */
const read = (path: string) => readFileSync(join(repoRoot, path), 'utf8');

interface ComposeService {
  image?: string;
  build?: string;
  command?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test?: string[]; disable?: boolean };
  ports?: string[];
  volumes?: string[];
}
interface Compose {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

const compose = parse(read('docker-compose.yml'), { merge: true }) as Compose;
const parleyServices = Object.entries(compose.services).filter(([, s]) => s.build === '.');
const knownVariables = new Set(Object.keys(EnvSchema.shape));

/** Compose's `${NAME:?message}` and `${NAME:-default}` with values an operator would set. */
function interpolate(value: string, env: Record<string, string>): string {
  return value.replace(/\$\{(\w+)(?::[?-]([^}]*))?\}/g, (_match, name: string, fallback?: string) => {
    const set = env[name];
    if (set !== undefined) return set;
    if (_match.includes(':?')) throw new Error(`${name} must be set`);
    return fallback ?? '';
  });
}

const operatorEnv = { JWT_SECRET: 'a'.repeat(64), POSTGRES_PASSWORD: 'pg-secret' };

/** The instruction lines of the Dockerfile, continuation lines joined. */
const dockerfile = read('Dockerfile')
  .replace(/\\\n\s*/g, ' ')
  .split('\n')
  .map((line) => line.trim())
  .filter((line) => line && !line.startsWith('#'));
const stages = dockerfile.reduce<string[][]>((all, line) => {
  if (line.startsWith('FROM ')) all.push([]);
  all.at(-1)?.push(line);
  return all;
}, []);

let deployment: TestDeployment;
const scratch = mkdtempSync(join(tmpdir(), 'parley-deploy-'));

beforeAll(async () => {
  deployment = await TestDeployment.create();
});
afterAll(async () => {
  await deployment?.cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

describe('docker-compose.yml', () => {
  it('runs PostgreSQL, Redis with its append-only file, a migration, two API instances, a worker and a proxy', () => {
    expect(Object.keys(compose.services).sort()).toEqual(
      ['api-1', 'api-2', 'migrate', 'postgres', 'proxy', 'redis', 'worker'].sort(),
    );
    const redis = compose.services.redis?.command ?? [];
    const option = (name: string) => redis[redis.indexOf(name) + 1];
    expect(redis[0]).toBe('redis-server');
    expect(option('--appendonly')).toBe('yes');
    expect(['everysec', 'always']).toContain(option('--appendfsync'));
    // Eviction would drop accepted messages from the stream.
    expect(option('--maxmemory-policy')).toBe('noeviction');
    expect(compose.services.redis?.volumes?.some((v) => v.endsWith(':/data'))).toBe(true);
    expect(compose.services.postgres?.volumes?.some((v) => v.endsWith(':/var/lib/postgresql/data'))).toBe(
      true,
    );
  });

  it('gives every Parley service only settings the server knows, and they load', () => {
    expect(parleyServices.map(([name]) => name).sort()).toEqual(['api-1', 'api-2', 'migrate', 'worker']);
    for (const [name, service] of parleyServices) {
      const environment = service.environment ?? {};
      for (const key of Object.keys(environment)) {
        expect(knownVariables.has(key), `${name}: ${key} is not a Parley setting`).toBe(true);
      }
      const values = Object.fromEntries(
        Object.entries(environment).map(([key, value]) => [key, interpolate(String(value), operatorEnv)]),
      );
      const config = loadConfig(values);
      expect(config.env).toBe('production');
      // Both engines are the compose services, reached by their service names.
      expect(new URL(config.databaseUrl ?? '').hostname).toBe('postgres');
      expect(new URL(config.redisUrl ?? '').hostname).toBe('redis');
      expect(config.port).toBe(3000);
      // Behind nginx, login throttling must see client addresses, not the proxy's.
      if (name !== 'migrate') expect(config.trustProxy).toBe(true);
    }
    // Production refuses to start without a signing secret; compose insists on one.
    expect(() => interpolate(String(compose.services['api-1']?.environment?.JWT_SECRET), {})).toThrow(
      /JWT_SECRET must be set/,
    );
  });

  it('runs each instance with the CLI command for its role, after migrations and healthy engines', () => {
    expect(compose.services['api-1']?.command).toEqual(['start', '--no-worker']);
    expect(compose.services['api-2']?.command).toEqual(['start', '--no-worker']);
    expect(compose.services.worker?.command).toEqual(['worker']);
    expect(compose.services.migrate?.command).toEqual(['migrate']);
    // A restarted worker resumes its own unacknowledged entries only under the same name.
    expect(compose.services.worker?.environment?.PARLEY_WORKER_ID).toBe('worker-1');
    for (const name of ['api-1', 'api-2', 'worker']) {
      expect(compose.services[name]?.depends_on).toMatchObject({
        postgres: { condition: 'service_healthy' },
        redis: { condition: 'service_healthy' },
        migrate: { condition: 'service_completed_successfully' },
      });
    }
  });

  it('checks health on the port the instances listen on, and the proxy balances both API instances', () => {
    for (const name of ['api-1', 'api-2', 'worker']) {
      const test = compose.services[name]?.healthcheck?.test?.join(' ') ?? '';
      expect(test, name).toContain(`127.0.0.1:${compose.services[name]?.environment?.PORT}/healthz`);
    }
    const nginx = read('deploy/nginx.conf');
    expect(compose.services.proxy?.volumes).toContain(
      './deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro',
    );
    const upstream = [...nginx.matchAll(/^\s*server ([\w-]+):(\d+)/gm)].map((m) => `${m[1]}:${m[2]}`);
    expect(upstream.sort()).toEqual(['api-1:3000', 'api-2:3000']);
    const ws = /location = \/ws \{([^}]*)\}/.exec(nginx)?.[1] ?? '';
    expect(ws).toContain('proxy_set_header Upgrade $http_upgrade');
    expect(ws).toContain('proxy_set_header Connection $connection_upgrade');
    expect(nginx).toMatch(/proxy_http_version 1\.1/);
    expect(/location \/trpc \{([^}]*)\}/.exec(nginx)?.[1]).toContain('proxy_pass http://parley_api');
    // Metrics are not served to the public side of the proxy.
    expect(/location = \/metrics \{([^}]*)\}/.exec(nginx)?.[1]).toContain('return 404');
    // Access lines never hold a query string (plain WebSocket clients may send `?token=`): every
    // access log names a format of this file, and no format logs the request line or arguments.
    const accessLogs = [...nginx.matchAll(/^\s*access_log\s+(\S+)\s*(\S*?);/gm)];
    expect(accessLogs.length).toBeGreaterThan(0);
    const formats = new Map(
      [...nginx.matchAll(/log_format\s+(\S+)\s+([^;]*);/g)].map((m) => [m[1], m[2] ?? '']),
    );
    for (const [, path, format] of accessLogs) {
      if (path === 'off') continue;
      expect(formats.has(format ?? ''), `access_log ${path} uses a format defined here`).toBe(true);
      expect(formats.get(format ?? '')).not.toMatch(/\$(request|request_uri|args|query_string|arg_\w+)\b/);
    }
    expect(compose.services.proxy?.depends_on).toMatchObject({
      'api-1': { condition: 'service_healthy' },
      'api-2': { condition: 'service_healthy' },
    });
  });
});

describe('Dockerfile', () => {
  it('builds production dependencies in one stage and runs as a non-root user in another', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(stages.every((stage) => /^FROM node:20-slim\b/.test(stage[0] ?? ''))).toBe(true);
    expect(dockerfile.some((line) => /^RUN npm ci --omit=dev\b/.test(line))).toBe(true);
    const runtime = stages.at(-1) ?? [];
    const user = runtime.find((line) => line.startsWith('USER '));
    expect(user).toBeDefined();
    expect(user).not.toMatch(/USER (root|0)\b/);
    expect(runtime.some((line) => line.startsWith('COPY --from='))).toBe(true);
  });

  it('starts the same CLI, checks /healthz on its port, and copies files that exist', () => {
    const runtime = stages.at(-1) ?? [];
    expect(runtime).toContain('ENTRYPOINT ["node", "server/bin/parley.js"]');
    expect(runtime).toContain('CMD ["start"]');
    expect(existsSync(join(repoRoot, 'server/bin/parley.js'))).toBe(true);
    const env = runtime
      .filter((line) => line.startsWith('ENV '))
      .flatMap((line) =>
        [...line.matchAll(/(\w+)=(\S+)/g)].map((m): [string, string] => [m[1] ?? '', m[2] ?? '']),
      );
    for (const [key] of env) expect(knownVariables.has(key), key).toBe(true);
    const port = Object.fromEntries(env).PORT;
    expect(runtime).toContain(`EXPOSE ${port}`);
    const healthcheck = runtime.find((line) => line.startsWith('HEALTHCHECK ')) ?? '';
    expect(healthcheck).toContain('/healthz');
    expect(healthcheck).toContain('process.env.PORT');
    for (const line of dockerfile.filter((l) => l.startsWith('COPY ') && !l.startsWith('COPY --from'))) {
      const sources = line.split(/\s+/).slice(1, -1);
      for (const source of sources) expect(existsSync(join(repoRoot, source)), source).toBe(true);
    }
    const ignored = read('.dockerignore').split('\n');
    for (const entry of ['**/node_modules', '.git', 'data', '.env']) expect(ignored).toContain(entry);
  });

  it('copies what the install steps run into each stage before it runs npm ci', () => {
    const manifest = (path: string) =>
      JSON.parse(read(path)) as { scripts?: Record<string, string>; workspaces?: string[] };
    const root = manifest('package.json');
    // Scripts npm runs on install: the root's, and `prepare` of each workspace (run from its folder).
    const installScripts = [
      ...['preinstall', 'install', 'postinstall', 'prepare'].map((name) => ({
        dir: '',
        command: root.scripts?.[name],
      })),
      ...(root.workspaces ?? []).flatMap((dir) =>
        ['preinstall', 'install', 'postinstall', 'prepare'].map((name) => ({
          dir: `${dir}/`,
          command: manifest(`${dir}/package.json`).scripts?.[name],
        })),
      ),
    ].filter((script): script is { dir: string; command: string } => Boolean(script.command));
    expect(installScripts.length).toBeGreaterThan(0);
    const lines = read('Dockerfile').split('\n');
    const installs = lines.flatMap((line, index) => (line.startsWith('RUN npm ci') ? [index] : []));
    expect(installs.length).toBeGreaterThan(0);
    for (const install of installs) {
      if (lines[install]?.includes('--ignore-scripts')) continue;
      const stageStart = lines.slice(0, install).findLastIndex((line) => line.startsWith('FROM '));
      const copied = lines
        .slice(stageStart, install)
        .filter((line) => line.startsWith('COPY ') && !line.startsWith('COPY --from'))
        .flatMap((line) => line.split(/\s+/).slice(1, -1));
      for (const { dir, command } of installScripts) {
        // A script file the command runs, or the patches patch-package applies.
        const files = command
          .split(/\s+/)
          .filter((word) => /\.(m?js|cjs)$/.test(word))
          .map((word) => `${dir}${word}`);
        if (/(^|\s)patch-package(\s|$)/.test(command)) files.push(`${dir}patches/postgres+3.4.9.patch`);
        expect(files.length, command).toBeGreaterThan(0);
        for (const file of files) {
          expect(
            copied.some((source) => file === source || file.startsWith(`${source.replace(/\/$/, '')}/`)),
            `${file} is copied before \`${lines[install]}\``,
          ).toBe(true);
        }
      }
    }
  });

  it('runs the compiled server, built in another stage, with nothing from devDependencies', () => {
    const root = JSON.parse(read('package.json')) as { devDependencies: Record<string, string> };
    const server = JSON.parse(read('server/package.json')) as {
      dependencies: Record<string, string>;
      devDependencies?: Record<string, string>;
    };
    const runtimeDependencies = new Set(Object.keys(server.dependencies));
    // The transpiler and the compiler are for development, tests and the build only.
    for (const tool of ['tsx', 'typescript', 'esbuild']) {
      expect(runtimeDependencies.has(tool), tool).toBe(false);
      if (tool !== 'esbuild') expect(Object.keys(root.devDependencies)).toContain(tool);
    }
    const runtime = stages.at(-1) ?? [];
    const build = stages.find((stage) =>
      stage.some((line) => /^RUN node server\/scripts\/build\.mjs\b/.test(line)),
    );
    expect(build, 'a stage runs the server build').toBeDefined();
    const buildName = /^FROM \S+ AS (\S+)/i.exec(build?.[0] ?? '')?.[1];
    expect(runtime).toContain(`COPY --from=${buildName} /app/server/dist ./server/dist`);
    // The runtime image holds no TypeScript sources: the bin runs the build.
    expect(runtime.some((line) => /^COPY (server\/src|server |drizzle|tsconfig)/.test(line))).toBe(false);
    const bin = read('server/bin/parley.js');
    expect(bin).toContain('../dist/server/src/cli.js');
    expect(bin).not.toMatch(/tsx|typescript/);

    // What the compiled server imports must be a production dependency.
    const files: string[] = ['drizzle/schema.ts'];
    const walk = (dir: string) => {
      for (const entry of readdirSync(join(repoRoot, dir), { withFileTypes: true })) {
        const path = `${dir}/${entry.name}`;
        if (entry.isDirectory()) walk(path);
        else if (path.endsWith('.ts')) files.push(path);
      }
    };
    walk('server/src');
    const missing: string[] = [];
    for (const file of files) {
      // Static imports and `await import('...')`; `import type` is erased and needs nothing.
      const text = read(file).replace(/^import type .*$/gm, '');
      for (const match of text.matchAll(/(?:from|import)\s*\(?\s*'([^'.][^']*)'/g)) {
        const specifier = match[1] ?? '';
        if (specifier.startsWith('node:')) continue;
        const name = specifier.startsWith('@')
          ? specifier.split('/').slice(0, 2).join('/')
          : specifier.split('/')[0];
        if (name && !runtimeDependencies.has(name)) missing.push(`${file}: ${specifier}`);
      }
    }
    expect(missing).toEqual([]);
  });
});

describe(`the commands the containers run (${engineLabel})`, () => {
  const env = (extra: Record<string, string> = {}) => ({
    NODE_ENV: 'production',
    JWT_SECRET: deployment.jwtSecret,
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_FORMAT: 'json',
    LOG_LEVEL: 'info',
    ...(deployment.databaseUrl ? { DATABASE_URL: deployment.databaseUrl } : {}),
    ...deployment.redisEnv(),
    ...extra,
  });

  it('lists every command the compose file uses in --help', async () => {
    const help = await runParley(['--help'], {});
    expect(help.code).toBe(0);
    for (const [name, service] of parleyServices) {
      const [command, ...flags] = service.command ?? [];
      expect(help.stdout, name).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
      for (const flag of flags) expect(help.stdout, `${name} ${flag}`).toContain(flag);
    }
    const unknown = await runParley(['serve'], {});
    expect(unknown.code).toBe(64);
    expect(unknown.stderr).toContain('Unknown command "serve"');
  });

  it('runs the migrate service command to completion on a fresh database', { timeout: 90_000 }, async () => {
    const dataDir = join(scratch, 'migrate');
    const args = compose.services.migrate?.command ?? [];
    const result = await runParley(args, env({ DATA_DIR: dataDir }));
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout.split('\n').filter(Boolean);
    expect(lines.map((line) => (JSON.parse(line) as { msg: string }).msg)).toContain('migrations applied');
    if (!deployment.databaseUrl) expect(readdirSync(join(dataDir, 'pglite')).length).toBeGreaterThan(0);
    // Running it again is a no-op, as on every deploy.
    expect((await runParley(args, env({ DATA_DIR: dataDir }))).code).toBe(0);
  });

  // The API and worker containers run apart, which needs Redis: on the in-process broker both
  // commands refuse to start (test/embedded-durability.test.ts).
  it.skipIf(!engines.redisUrl)(
    'runs the API and worker service commands, which serve health and metrics and stop on SIGTERM',
    { timeout: 90_000 },
    async () => {
      const apiArgs = compose.services['api-1']?.command ?? [];
      const workerArgs = compose.services.worker?.command ?? [];
      const api = await ParleyProcess.start(apiArgs, env({ DATA_DIR: join(scratch, 'api') }));
      const worker = await ParleyProcess.start(workerArgs, env({ DATA_DIR: join(scratch, 'worker') }));
      try {
        for (const instance of [api, worker]) {
          expect((await fetch(`${instance.url}/healthz`)).status).toBe(200);
          expect(await (await fetch(`${instance.url}/readyz`)).text()).toBe(
            'ready: database up, broker up, worker lag 0',
          );
          const metrics = await (await fetch(`${instance.url}/metrics`)).text();
          expect(metrics).toContain('parley_worker_lag_entries');
        }
        const health = (await (await fetch(`${api.url}/trpc/health`)).json()) as {
          result: { data: { json: { status: string } } };
        };
        expect(health.result.data.json.status).toBe('ok');
        // The worker process serves no API.
        expect((await fetch(`${worker.url}/trpc/health`)).status).toBe(404);
        expect(api.lines.some((line) => line.includes('"worker":false'))).toBe(true);
      } finally {
        expect(await api.stop('SIGTERM')).toBe(0);
        expect(await worker.stop('SIGTERM')).toBe(0);
      }
      for (const instance of [api, worker]) {
        expect(instance.lines.some((line) => line.includes('"msg":"stopped"'))).toBe(true);
      }
    },
  );

  it('reads --config files, with environment variables taking precedence', { timeout: 90_000 }, async () => {
    const dataDir = join(scratch, 'config');
    const file = join(scratch, 'parley.json');
    writeFileSync(
      file,
      JSON.stringify({ DATA_DIR: dataDir, LOG_LEVEL: 'warn', LOG_FORMAT: 'json', PORT: 0 }),
    );
    // LOG_LEVEL=warn from the file hides the info line...
    const quiet = await runParley(['migrate', '--config', file], { JWT_SECRET: deployment.jwtSecret });
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stdout).not.toContain('migrations applied');
    expect(existsSync(join(dataDir, 'pglite'))).toBe(true);
    // ...and the environment's LOG_LEVEL wins over the file.
    const loud = await runParley(['migrate', '-c', file], {
      JWT_SECRET: deployment.jwtSecret,
      LOG_LEVEL: 'info',
    });
    expect(loud.code, loud.stderr).toBe(0);
    expect(loud.stdout).toContain('migrations applied');

    const typo = join(scratch, 'typo.json');
    writeFileSync(typo, JSON.stringify({ DATABSE_URL: 'postgres://x' }));
    const rejected = await runParley(['migrate', '--config', typo], {});
    expect(rejected.code).toBe(78);
    expect(rejected.stderr).toContain('DATABSE_URL: unknown setting');
    const invalid = join(scratch, 'invalid.json');
    writeFileSync(invalid, JSON.stringify({ PORT: 'eighty' }));
    expect((await runParley(['migrate', '--config', invalid], {})).stderr).toContain('PORT');
  });
});

describe(`behind the proxy (${engineLabel})`, () => {
  /** A failed login over plain HTTP, as forwarded by nginx for `forwardedFor`. */
  async function failLogin(url: string, username: string, forwardedFor: string): Promise<string | undefined> {
    const response = await fetch(`${url}/trpc/auth.login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': forwardedFor },
      body: JSON.stringify({ json: { username, password: 'not the password' } }),
    });
    const body = (await response.json()) as { error?: { json?: { data?: { code?: string } } } };
    return body.error?.json?.data?.code;
  }

  it('throttles failed logins per forwarded client address only when TRUST_PROXY is on', async () => {
    const limits = { loginFailuresPerAddress: 2, loginFailuresPerAccount: 1000, loginDelaySeconds: 60 };
    const trusting = await deployment.start({ trustProxy: true, limits });
    const name = (n: number) => `nobody_${n}_${Math.random().toString(36).slice(2, 8)}`;
    // The proxy appends the address it saw; what the client sent before it is not trusted.
    expect(await failLogin(trusting.url, name(1), '203.0.113.9, 198.51.100.1')).toBe('UNAUTHORIZED');
    expect(await failLogin(trusting.url, name(2), '203.0.113.10, 198.51.100.1')).toBe('UNAUTHORIZED');
    expect(await failLogin(trusting.url, name(3), '198.51.100.1')).toBe('TOO_MANY_REQUESTS');
    expect(await failLogin(trusting.url, name(4), '198.51.100.2')).toBe('UNAUTHORIZED');

    const direct = await deployment.start({ limits, redisPrefix: `${deployment.redisPrefix}direct:` });
    expect(await failLogin(direct.url, name(5), '198.51.100.3')).toBe('UNAUTHORIZED');
    expect(await failLogin(direct.url, name(6), '198.51.100.4')).toBe('UNAUTHORIZED');
    // Without TRUST_PROXY the header is ignored: both failures came from this machine.
    expect(await failLogin(direct.url, name(7), '198.51.100.5')).toBe('TOO_MANY_REQUESTS');
  });
});
