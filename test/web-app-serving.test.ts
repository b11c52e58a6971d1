import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import { TestDeployment } from './support/env.js';

/**
 * The server serves a built web app at `/`: its files, and its index.html for any other page
 * path, without ever answering for the API's own paths.
 */
let deployment: TestDeployment;
let app: App;
let bare: App;
let dir: string;
const INDEX =
  '<!doctype html><html><body><div id="root"></div><script type="module" src="/assets/app-1a2b.js"></script></body></html>';
const SCRIPT = `console.log(${JSON.stringify('parley '.repeat(200))});`;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'parley-web-'));
  await mkdir(path.join(dir, 'assets'));
  await writeFile(path.join(dir, 'index.html'), INDEX);
  await writeFile(path.join(dir, 'assets', 'app-1a2b.js'), SCRIPT);
  await writeFile(path.join(dir, '.built'), 'secret stamp');
  deployment = await TestDeployment.create();
  app = await deployment.start({ webDir: dir });
  bare = await deployment.start({ webDir: null });
});

afterAll(async () => {
  await deployment?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

/**
 * A response whose body has been read to the end (kept in a copy for the test to read): a body
 * left unread holds its connection, and the app's close would wait for it.
 */
async function fetchRead(url: string, init?: RequestInit): Promise<Response> {
  const response = await fetch(url, init);
  await response.clone().arrayBuffer();
  return response;
}

const get = (url: string, init?: RequestInit) => fetchRead(`${app.url}${url}`, init);

describe('the web app at /', () => {
  it('serves index.html at / and at any page path, for the browser to route', async () => {
    for (const url of ['/', '/c/6f1d3c1e-2c55-4f55-9a8e-3b8f7d2a1b00', '/settings/profile?tab=1']) {
      const response = await get(url);
      expect(response.status, url).toBe(200);
      expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(response.headers.get('cache-control')).toBe('no-cache');
      expect(response.headers.get('content-security-policy')).toContain("default-src 'self'");
      expect(await response.text()).toBe(INDEX);
    }
  });

  it('serves hashed assets for good, gzipped when asked, and revalidates with an etag', async () => {
    const response = await get('/assets/app-1a2b.js', { headers: { 'accept-encoding': 'gzip' } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(response.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    // fetch decodes gzip by itself; the raw length shows it was sent compressed.
    expect(Number(response.headers.get('content-length'))).toBeLessThan(SCRIPT.length);
    expect(await response.text()).toBe(SCRIPT);
    const etag = response.headers.get('etag') ?? '';
    expect((await get('/assets/app-1a2b.js', { headers: { 'if-none-match': etag } })).status).toBe(304);
    const head = await get('/assets/app-1a2b.js', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('answers 404 for a missing file, a dotfile and a way out of the directory', async () => {
    for (const url of [
      '/assets/missing.js',
      '/favicon.ico',
      '/.built',
      '/assets/%2e%2e/.built',
      '/%2e%2e/package.json',
    ]) {
      const response = await get(url);
      expect(response.status, url).toBe(404);
      expect(await response.text()).not.toContain('secret');
    }
  });

  it('never answers for the API: /trpc, /api, /openapi.json, /healthz, /readyz, /metrics and /ws keep their own answers', async () => {
    expect(await (await get('/healthz')).text()).toBe('ok');
    expect(await (await get('/healthz?probe=1')).text()).not.toContain('<html');
    expect((await get('/readyz')).status).toBe(200);
    expect(await (await get('/metrics')).text()).toContain('# HELP');
    expect((await get('/openapi.json')).headers.get('content-type')).toContain('application/json');
    const rest = await get('/api/nothing/here');
    expect(rest.status).toBe(404);
    expect(await rest.text()).not.toContain('<html');
    expect((await get('/trpc/health')).headers.get('content-type')).toContain('application/json');
    for (const url of ['/trpc', '/ws', '/api', '/metrics/extra', '/ws/other']) {
      expect(await (await get(url)).text(), url).not.toContain('<html');
    }
    const post = await get('/', { method: 'POST', body: '{}' });
    expect(post.status).toBe(404);
  });

  it('serves nothing at / without a web app', async () => {
    const response = await fetchRead(`${bare.url}/`);
    expect(response.status).toBe(404);
    expect(await (await fetch(`${bare.url}/healthz`)).text()).toBe('ok');
  });
});
