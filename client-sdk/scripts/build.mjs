#!/usr/bin/env node
// Builds @parley/client into dist/: ESM JavaScript and .d.ts files.
//
// The SDK's types come from the server's router. tsc emits the server's declarations next to the
// SDK's; only those the router's type reaches are kept (in dist/server/), and the SDK's
// declarations are pointed at them. The router's context type (the server's services, database
// and broker) is never part of what a client sends or receives, so it ships as an opaque type:
// the package then needs none of the server's dependencies, and the build fails if a kept
// declaration imports a package the SDK does not depend on, or if the JavaScript imports one.
//
// With --install (npm's `prepare`, so the package resolves and `parley-chat` exists in the
// repository right after `npm install`), a tree without the sources or the dev dependencies
// (a production install) skips the build: nothing there needs the SDK. With --if-stale (before
// `npm run bench`, whose clients run the package as published), it builds only when a source is
// newer than the build.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const sdkDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repoDir = path.resolve(sdkDir, '..');
const distDir = path.join(sdkDir, 'dist');
const srcDir = path.join(sdkDir, 'src');
const serverSrcDir = path.join(repoDir, 'server', 'src');
const routerDeclaration = path.join(serverSrcDir, 'routers', '_app.d.ts');
const contextDeclaration = path.join(serverSrcDir, 'context.d.ts');

/** Why this tree cannot build the SDK (null when it can). */
async function cannotBuild() {
  const sources = [srcDir, serverSrcDir, path.join(repoDir, 'tsconfig.json')];
  if (!sources.every((source) => existsSync(source))) return 'there are no sources here';
  // The compiler comes with tRPC as its peer even in a production install; Node's types do not.
  for (const tool of ['typescript', '@types/node']) {
    try {
      createRequire(import.meta.url).resolve(`${tool}/package.json`);
    } catch {
      return `${tool} is not installed`;
    }
  }
  return null;
}

const mode = process.argv[2];
if (mode !== undefined && mode !== '--install' && mode !== '--if-stale') {
  console.error(`unknown option ${mode} (expected --install or --if-stale)`);
  process.exit(64);
}
const install = mode === '--install';
/** Written last, so that its time is the build's. */
const stamp = path.join(distDir, 'build.json');

/** The time of the newest file the build reads. */
function newestInput() {
  let newest = 0;
  const visit = (file) => {
    if (!existsSync(file)) return;
    const stats = statSync(file);
    if (stats.isDirectory()) for (const name of readdirSync(file)) visit(path.join(file, name));
    else newest = Math.max(newest, stats.mtimeMs);
  };
  for (const input of [
    srcDir,
    serverSrcDir,
    path.join(sdkDir, 'package.json'),
    path.join(repoDir, 'tsconfig.json'),
  ])
    visit(input);
  visit(fileURLToPath(import.meta.url));
  return newest;
}

if (mode === '--if-stale' && existsSync(stamp) && newestInput() <= statSync(stamp).mtimeMs) process.exit(0);

const missing = await cannotBuild();
if (missing) {
  if (!install) fail(missing);
  // A production install needs no SDK: the server does not use it.
  const built = existsSync(path.join(distDir, 'index.js'));
  console.log(`${missing}: ${built ? 'keeping' : 'not building'} the SDK's dist`);
  process.exit(0);
}
const { default: ts } = await import('typescript');

const entries = ['index.ts', 'node.ts', 'cli.ts', 'react/index.ts'].map((file) => path.join(srcDir, file));
/** Entry points whose declarations are not published (the CLI is only run). */
const withoutDeclarations = new Set([path.join(srcDir, 'cli.d.ts')]);
/** JavaScript that may use Node's built-in modules; the main entry must run in browsers too. */
const nodeOnly = new Set(['node.js', 'cli.js']);

const manifest = JSON.parse(await readFile(path.join(sdkDir, 'package.json'), 'utf8'));
const dependencies = new Set(Object.keys(manifest.dependencies ?? {}));
// The React bindings (`@parley/client/react`) import React and TanStack Query, which the app
// brings: optional peers, so that Node users of the client never install them.
const peers = new Set(Object.keys(manifest.peerDependencies ?? {}));

function fail(message) {
  console.error(`build failed: ${message}`);
  process.exit(1);
}

// 1. Compile: the SDK's JavaScript and declarations, and the server's declarations.
const base = ts.getParsedCommandLineOfConfigFile(
  path.join(repoDir, 'tsconfig.json'),
  {},
  {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (diagnostic) =>
      fail(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')),
  },
);
const options = {
  ...base.options,
  noEmit: false,
  declaration: true,
  rootDir: repoDir,
  outDir: '/',
  sourceMap: false,
  declarationMap: false,
};
const program = ts.createProgram({ rootNames: entries, options });
const diagnostics = ts.getPreEmitDiagnostics(program);
if (diagnostics.length > 0) {
  const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => repoDir, getNewLine: () => '\n' };
  console.error(ts.formatDiagnosticsWithColorAndContext(diagnostics, host));
  fail('type errors');
}
/** Emitted files by their path as if compiled in place (server/src/x.d.ts, client-sdk/src/y.js). */
const emitted = new Map();
const result = program.emit(undefined, (file, text) => {
  emitted.set(path.join(repoDir, path.relative('/', file)), text);
});
if (result.emitSkipped) fail('tsc skipped the emit');

// 2. Follow the router's declarations through their relative imports.
const specifierPattern = /(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(['"])([^'"]+)\1/g;
const specifiers = (text) => [...text.matchAll(specifierPattern)].map((match) => match[2]);
const packageOf = (specifier) =>
  specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0];
const declarationFor = (from, specifier) =>
  path.resolve(path.dirname(from), specifier).replace(/\.js$/, '.d.ts');

const kept = new Map();
const queue = [routerDeclaration];
while (queue.length > 0) {
  const file = queue.shift();
  if (kept.has(file)) continue;
  if (file === contextDeclaration) {
    kept.set(
      file,
      "/** The server's per-call context. Clients never see it, so it is opaque here. */\nexport type Context = object;\n",
    );
    continue;
  }
  const text = emitted.get(file);
  if (text === undefined) fail(`no declaration emitted for ${path.relative(repoDir, file)}`);
  kept.set(file, text);
  for (const specifier of specifiers(text)) {
    if (specifier.startsWith('.')) {
      queue.push(declarationFor(file, specifier));
    } else if (!dependencies.has(packageOf(specifier))) {
      fail(
        `${path.relative(repoDir, file)} imports "${specifier}", which @parley/client does not depend on: ` +
          'keep server-only types out of what procedures take and return',
      );
    }
  }
}

// 3. Write dist/: the SDK's files at the top, the server's declarations under dist/server/.
await rm(distDir, { recursive: true, force: true });
const toDist = (file) =>
  file.startsWith(serverSrcDir + path.sep)
    ? path.join(distDir, 'server', path.relative(serverSrcDir, file))
    : path.join(distDir, path.relative(srcDir, file));

const outputs = new Map();
for (const [file, text] of emitted) {
  if (!file.startsWith(srcDir + path.sep) || withoutDeclarations.has(file)) continue;
  outputs.set(toDist(file), text);
}
for (const [file, text] of kept) outputs.set(toDist(file), text);

for (const [file, original] of outputs) {
  const relativeFile = path.relative(distDir, file);
  let text = original;
  for (const specifier of new Set(specifiers(original))) {
    if (!specifier.startsWith('.')) {
      const name = packageOf(specifier);
      if (specifier.startsWith('node:') || name === 'typescript') {
        if (file.endsWith('.js') && !nodeOnly.has(relativeFile))
          fail(`${relativeFile} imports "${specifier}"`);
        continue;
      }
      const allowed =
        dependencies.has(name) || (peers.has(name) && relativeFile.startsWith(`react${path.sep}`));
      if (!allowed) fail(`${relativeFile} imports "${specifier}", which is not a dependency`);
      continue;
    }
    // Declarations that reach into the server's source now point at the copies in dist/server/.
    const source = path.resolve(path.dirname(toSourcePath(file)), specifier);
    const target = toDist(source);
    if (!target.startsWith(distDir + path.sep))
      fail(`${relativeFile} imports "${specifier}" outside the package`);
    let relative = path.relative(path.dirname(file), target).split(path.sep).join('/');
    if (!relative.startsWith('.')) relative = `./${relative}`;
    if (relative !== specifier)
      text = text.split(`'${specifier}'`).join(`'${relative}'`).split(`"${specifier}"`).join(`"${relative}"`);
    const resolved = target.replace(/\.js$/, file.endsWith('.d.ts') ? '.d.ts' : '.js');
    if (!outputs.has(resolved)) fail(`${relativeFile} imports "${relative}", which is not in the package`);
  }
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, text);
}
await chmod(path.join(distDir, 'cli.js'), 0o755);
await writeFile(stamp, `${JSON.stringify({ builtAt: new Date().toISOString() })}\n`);

/** Where a dist file came from, to resolve its original relative imports. */
function toSourcePath(distFile) {
  for (const [source] of emitted) if (toDist(source) === distFile) return source;
  for (const [source] of kept) if (toDist(source) === distFile) return source;
  fail(`no source for ${distFile}`);
}

console.log(
  `built ${path.relative(process.cwd(), distDir) || 'dist'}: ${outputs.size} files ` +
    `(${kept.size} server declarations)`,
);
