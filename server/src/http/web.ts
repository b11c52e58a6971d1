import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type http from 'node:http';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Logger } from '../logger.js';

/** Paths the API owns; the app's fallback page never answers for them. */
const RESERVED = ['/trpc', '/ws', '/api', '/openapi.json', '/healthz', '/readyz', '/metrics'];

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.webmanifest': 'application/manifest+json',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};
const COMPRESSIBLE = new Set(['.html', '.js', '.css', '.json', '.svg', '.txt', '.webmanifest']);

/**
 * The app's pages: the script may talk only to this origin (HTTP and its WebSocket), and the
 * page may not be framed.
 */
const PAGE_HEADERS = {
  'content-security-policy':
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

interface CachedFile {
  mtimeMs: number;
  body: Buffer;
  gzipped: Buffer | null;
  etag: string;
}

export interface WebApp {
  /** Answers a GET or HEAD for the app; returns false for anything else (the API's paths among them). */
  handle(req: http.IncomingMessage, res: http.ServerResponse): boolean;
}

/**
 * Serves the built web app from `dir`: its files as they are (hashed assets cached for good,
 * everything else revalidated), and its index.html for any other page path, so that a link
 * into the app works after a reload. Files are read once per change and kept gzipped.
 */
export function serveWebApp(dir: string, log: Logger): WebApp {
  const root = path.resolve(dir);
  const cache = new Map<string, CachedFile>();

  const load = async (file: string): Promise<CachedFile | null> => {
    const stats = await stat(file).catch(() => null);
    if (!stats?.isFile()) return null;
    const cached = cache.get(file);
    if (cached && cached.mtimeMs === stats.mtimeMs) return cached;
    const body = await readFile(file);
    const compressible = COMPRESSIBLE.has(path.extname(file)) && body.length > 512;
    const entry: CachedFile = {
      mtimeMs: stats.mtimeMs,
      body,
      gzipped: compressible ? gzipSync(body) : null,
      etag: `"${createHash('sha1').update(body).digest('base64url')}"`,
    };
    cache.set(file, entry);
    return entry;
  };

  const send = (req: http.IncomingMessage, res: http.ServerResponse, file: string, entry: CachedFile) => {
    const extension = path.extname(file);
    const immutable = path.relative(root, file).startsWith(`assets${path.sep}`);
    const headers: Record<string, string> = {
      'content-type': TYPES[extension] ?? 'application/octet-stream',
      'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
      'x-content-type-options': 'nosniff',
      etag: entry.etag,
      vary: 'accept-encoding',
      ...(extension === '.html' ? PAGE_HEADERS : {}),
    };
    if (req.headers['if-none-match'] === entry.etag) {
      res.writeHead(304, headers).end();
      return;
    }
    const gzip = entry.gzipped && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    const body = gzip && entry.gzipped ? entry.gzipped : entry.body;
    if (gzip) headers['content-encoding'] = 'gzip';
    headers['content-length'] = String(body.length);
    res.writeHead(200, headers).end(req.method === 'HEAD' ? undefined : body);
  };

  const notFound = (res: http.ServerResponse) =>
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');

  return {
    handle(req, res) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return false;
      let pathname: string;
      try {
        pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
      } catch {
        return false;
      }
      if (RESERVED.some((prefix) => pathname === prefix || pathname.startsWith(`${prefix}/`))) return false;
      // No dotfiles, no way out of the directory.
      const file = path.resolve(root, `.${pathname}`);
      const inside = file === root || file.startsWith(root + path.sep);
      if (!inside || pathname.split('/').some((part) => part.startsWith('.')) || pathname.includes('\0')) {
        notFound(res);
        return true;
      }
      const index = path.join(root, 'index.html');
      void (async () => {
        const own = file === root ? null : await load(file);
        if (own) return send(req, res, file, own);
        // A missing file with an extension is a missing file; any other path is a page of the app.
        if (path.extname(pathname) !== '') return notFound(res);
        const page = await load(index);
        if (!page) return notFound(res);
        send(req, res, index, page);
      })().catch((error: unknown) => {
        log.error({ err: error }, 'serving the web app failed');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('error');
      });
      return true;
    },
  };
}
