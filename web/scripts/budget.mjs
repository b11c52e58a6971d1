#!/usr/bin/env node
// The web app's size budget: fails when the JavaScript in web/dist, gzipped, is over 120 KB, and
// reports what @parley/client costs a browser app (each entry bundled and minified on its own,
// gzipped; the React entry without React and TanStack Query, which the app brings).
//
//   node web/scripts/budget.mjs          check (run by .ci/run after the install built the app)
//   node web/scripts/budget.mjs --json   the same, and one JSON line with the sizes at the end
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const BUDGET_BYTES = 120 * 1024;
const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repoDir = path.resolve(webDir, '..');
const distDir = path.join(webDir, 'dist');

const gzipped = (bytes) => gzipSync(bytes, { level: 9 }).length;
const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KB`;

if (!existsSync(path.join(distDir, 'index.html'))) {
  console.error('web/dist is not built: run `npm run build` (or `node web/scripts/build.mjs`) first');
  process.exit(1);
}

/** Every JavaScript file the app ships, wherever Vite put it. */
function scripts(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return scripts(file);
    return entry.name.endsWith('.js') ? [file] : [];
  });
}
const files = scripts(distDir);
let app = 0;
for (const file of files) {
  const size = gzipped(readFileSync(file));
  app += size;
  console.log(`  ${path.relative(repoDir, file)}: ${kb(size)} gzipped`);
}

const { build } = await import('vite');
/** One SDK entry bundled for browsers, minified, and gzipped. */
async function sdkBundle(entry, external) {
  const output = await build({
    configFile: false,
    logLevel: 'silent',
    build: {
      write: false,
      minify: true,
      target: 'es2022',
      lib: { entry: path.join(repoDir, 'client-sdk', 'src', entry), formats: ['es'], fileName: 'entry' },
      rollupOptions: { external },
    },
  });
  const chunks = (Array.isArray(output) ? output : [output]).flatMap((result) => result.output);
  const code = chunks
    .filter((chunk) => chunk.type === 'chunk')
    .map((chunk) => chunk.code)
    .join('\n');
  return gzipped(Buffer.from(code));
}
const sdk = await sdkBundle('index.ts', []);
const sdkReact = await sdkBundle('react/index.ts', [/^react($|\/)/, /^@tanstack\//]);

console.log(
  `the app's JavaScript: ${kb(app)} gzipped in ${files.length} file(s) (budget ${kb(BUDGET_BYTES)})`,
);
console.log(`@parley/client for browsers: ${kb(sdk)} gzipped (with @trpc/client and superjson)`);
console.log(
  `@parley/client/react for browsers: ${kb(sdkReact)} gzipped (with @trpc/tanstack-react-query and what it takes of @trpc/client; React and TanStack Query not counted)`,
);
if (process.argv.includes('--json')) {
  console.log(
    JSON.stringify({
      appJsGzipBytes: app,
      budgetBytes: BUDGET_BYTES,
      sdkGzipBytes: sdk,
      sdkReactGzipBytes: sdkReact,
    }),
  );
}
if (app > BUDGET_BYTES) {
  console.error(`over budget: the app's JavaScript is ${kb(app)} gzipped, more than ${kb(BUDGET_BYTES)}`);
  process.exit(1);
}
