// Applies the upstream guard for a postgres.js 3.4.9 defect (porsager/postgres#1154, #1208):
// a write deferred with setImmediate can run after the connection closed and nulled its socket,
// throwing where no caller can catch it and ending the process, typically while PostgreSQL is
// unreachable. The guard fails the pending queries with CONNECTION_CLOSED instead, and teardown
// forgets the deferred write so a reused connection can flush again. Idempotent; it changes
// nothing when the installed version no longer has the defect.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const MARK = '/* parley: guarded nextWrite */';
const require = createRequire(import.meta.url);

let root;
try {
  // The package does not export its package.json: find it from the entry point.
  root = dirname(require.resolve('postgres', { paths: [process.cwd()] }));
  while (!isPostgresRoot(root)) {
    const parent = dirname(root);
    if (parent === root) process.exit(0);
    root = parent;
  }
} catch {
  process.exit(0); // postgres is not installed here
}

function isPostgresRoot(folder) {
  try {
    return JSON.parse(readFileSync(join(folder, 'package.json'), 'utf8')).name === 'postgres';
  } catch {
    return false;
  }
}

const unguarded = `  function nextWrite(fn) {
    const x = socket.write(chunk, fn)`;
const guarded = `  function nextWrite(fn) {
    ${MARK}
    if (!socket) {
      chunk = nextWriteTimer = null
      error(Errors.connection('CONNECTION_CLOSED', options, socket))
      return false
    }
    const x = socket.write(chunk, fn)`;
const teardown = '    clearImmediate(nextWriteTimer)\n';
const teardownFixed = '    clearImmediate(nextWriteTimer)\n    nextWriteTimer = chunk = null\n';

let patched = 0;
for (const flavour of ['src', 'cjs/src', 'cf/src']) {
  const file = join(root, flavour, 'connection.js');
  if (!existsSync(file)) continue;
  const source = readFileSync(file, 'utf8');
  if (source.includes(MARK) || !source.includes(unguarded)) continue;
  writeFileSync(file, source.replace(unguarded, guarded).replaceAll(teardown, teardownFixed));
  patched += 1;
}
if (patched > 0) console.log(`postgres.js: guarded nextWrite in ${patched} build(s)`);
