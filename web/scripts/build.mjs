#!/usr/bin/env node
// Builds the web app into web/dist with Vite, which the server serves at `/`.
//
//   node web/scripts/build.mjs              build
//   node web/scripts/build.mjs --install    build where there are sources and Vite (npm's
//                                           `prepare`); a production tree keeps the web/dist it
//                                           was given
//   node web/scripts/build.mjs --if-stale   build only when a source is newer than the build
//                                           (before `npm start`)
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repoDir = path.resolve(webDir, '..');
const distDir = path.join(webDir, 'dist');
// Written last, and never served (the server serves no dotfiles).
const stamp = path.join(distDir, '.built');
const relative = (file) => path.relative(process.cwd(), file) || '.';

const mode = process.argv[2];
if (mode !== undefined && mode !== '--install' && mode !== '--if-stale') {
  console.error(`unknown option ${mode} (expected --install or --if-stale)`);
  process.exit(64);
}

/** Everything the build reads: the app and the SDK it is built from. */
const inputs = [
  path.join(webDir, 'src'),
  path.join(webDir, 'index.html'),
  path.join(webDir, 'vite.config.ts'),
  path.join(repoDir, 'client-sdk', 'src'),
  fileURLToPath(import.meta.url),
];

function newestInput() {
  let newest = 0;
  const visit = (file) => {
    if (!existsSync(file)) return;
    const stats = statSync(file);
    if (stats.isDirectory()) {
      for (const name of readdirSync(file)) visit(path.join(file, name));
    } else {
      newest = Math.max(newest, stats.mtimeMs);
    }
  };
  for (const input of inputs) visit(input);
  return newest;
}

let vite = null;
try {
  vite = await import('vite');
} catch {
  // Not installed: Vite is a dev dependency, absent from a production install.
}
const hasSources = existsSync(path.join(webDir, 'src')) && existsSync(path.join(webDir, 'index.html'));
const built = existsSync(stamp);
const cannotBuild = !hasSources ? 'there are no sources here' : !vite ? 'Vite is not installed' : null;
if (cannotBuild) {
  if (mode === undefined) {
    console.error(`Cannot build the web app: ${cannotBuild}.`);
    process.exit(1);
  }
  // The server runs without the app (it then serves the API alone), so this never fails a start.
  if (mode === '--install' || !built) {
    console.log(`${cannotBuild}: ${built ? 'keeping' : 'not building'} ${relative(distDir)}`);
  }
  process.exit(0);
}
if (mode === '--if-stale' && built && newestInput() <= statSync(stamp).mtimeMs) process.exit(0);

const started = Date.now();
await vite.build({
  configFile: path.join(webDir, 'vite.config.ts'),
  logLevel: 'warn',
});
writeFileSync(stamp, `${JSON.stringify({ builtAt: new Date().toISOString() })}\n`);
console.log(`built ${relative(distDir)} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
