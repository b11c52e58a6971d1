#!/usr/bin/env node
// Compiles the server to JavaScript in server/dist, so it runs on plain `node` with only the
// production dependencies installed. tsconfig.build.json compiles server/src and
// drizzle/schema.ts (which the server imports) from the repository root, so the output keeps
// their relative layout: server/dist/server/src/cli.js imports server/dist/drizzle/schema.js.
// The SQL migrations are copied beside the compiled schema, where db/index.ts looks for them
// relative to itself both in the sources and in the build.
//
//   node server/scripts/build.mjs              build
//   node server/scripts/build.mjs --install    build where there are sources and TypeScript
//                                              (npm's `prepare`); a production tree keeps the
//                                              server/dist it was given
//   node server/scripts/build.mjs --if-stale   build only when a source is newer than the build
//                                              (before `npm start`, so it never runs old code)
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const serverDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repoDir = path.resolve(serverDir, '..');
const distDir = path.join(serverDir, 'dist');
const stamp = path.join(distDir, 'build.json');
const entry = path.join(distDir, 'server', 'src', 'cli.js');
const relative = (file) => path.relative(process.cwd(), file) || '.';

const mode = process.argv[2];
if (mode !== undefined && mode !== '--install' && mode !== '--if-stale') {
  console.error(`unknown option ${mode} (expected --install or --if-stale)`);
  process.exit(64);
}

/** Everything the build reads; a production tree has none of it and only server/dist. */
const inputs = [
  path.join(serverDir, 'src'),
  path.join(repoDir, 'drizzle'),
  path.join(repoDir, 'tsconfig.json'),
  path.join(repoDir, 'tsconfig.build.json'),
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

let ts = null;
try {
  ts = (await import('typescript')).default;
} catch {
  // Not installed; TypeScript comes with the dev dependencies (and with tRPC, as its peer).
}
const hasSources =
  existsSync(path.join(serverDir, 'src')) && existsSync(path.join(repoDir, 'tsconfig.build.json'));
const built = existsSync(entry) && existsSync(stamp);
// A production tree (the image, or `npm ci --omit=dev` beside a copied build) has server/dist
// and no sources: there is nothing to build, and the build it was given runs.
const cannotBuild = !hasSources ? 'there are no sources here' : !ts ? 'TypeScript is not installed' : null;
if (mode === undefined && cannotBuild) {
  console.error(`Cannot build the server: ${cannotBuild}.`);
  process.exit(1);
}
if (mode !== undefined && cannotBuild) {
  if (!built && mode === '--if-stale') {
    console.error(
      `The server is not built and ${cannotBuild}: run \`npm install\` (with dev dependencies) ` +
        'in the repository, or copy in a server/dist built there.',
    );
    process.exit(1);
  }
  if (mode === '--install') {
    console.log(`${cannotBuild}: ${built ? 'keeping' : 'not building'} ${relative(distDir)}`);
  }
  process.exit(0);
}
if (mode === '--if-stale' && built && newestInput() <= statSync(stamp).mtimeMs) process.exit(0);

const started = Date.now();
const configFile = path.join(repoDir, 'tsconfig.build.json');
const reportHost = {
  getCanonicalFileName: (file) => file,
  getCurrentDirectory: () => repoDir,
  getNewLine: () => '\n',
};
const fail = (diagnostics, message) => {
  console.error(ts.formatDiagnosticsWithColorAndContext(diagnostics, reportHost));
  console.error(`server build failed: ${message}`);
  process.exit(1);
};
const config = ts.getParsedCommandLineOfConfigFile(
  configFile,
  {},
  { ...ts.sys, onUnRecoverableConfigFileDiagnostic: (diagnostic) => fail([diagnostic], 'tsconfig') },
);
if (config.errors.length > 0) fail(config.errors, 'tsconfig');
const { rootDir, outDir } = config.options;
if (!rootDir || !outDir) fail([], 'tsconfig.build.json must set rootDir and outDir');

// Each file is transpiled on its own, which is exact because tsconfig.json requires
// isolatedModules and verbatimModuleSyntax; types are checked by `npm run typecheck` (and CI),
// not here, so installing and starting stay fast. Every file is an ES module (server/package.json
// says "type": "module"), which a lone file cannot tell NodeNext, so the module kind is explicit.
const compilerOptions = {
  ...config.options,
  module: ts.ModuleKind.ES2022,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
};
const outputs = [];
for (const file of config.fileNames) {
  const result = ts.transpileModule(readFileSync(file, 'utf8'), {
    compilerOptions,
    fileName: file,
    reportDiagnostics: true,
  });
  if (result.diagnostics?.length) fail(result.diagnostics, 'syntax errors');
  const target = path.join(outDir, path.relative(rootDir, file)).replace(/\.ts$/, '.js');
  outputs.push([target, result.outputText]);
}
// A file removed from the sources must not live on in the build.
rmSync(distDir, { recursive: true, force: true });
for (const [target, text] of outputs) {
  mkdirSync(path.dirname(target), { recursive: true });
  writeFileSync(target, text);
}
cpSync(path.join(repoDir, 'drizzle', 'migrations'), path.join(distDir, 'drizzle', 'migrations'), {
  recursive: true,
});
// Written last: a build that stopped half-way is stale, and the next start builds again.
writeFileSync(stamp, `${JSON.stringify({ builtAt: new Date().toISOString() })}\n`);
console.log(`built ${relative(distDir)} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
