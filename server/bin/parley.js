#!/usr/bin/env node
// Runs the compiled CLI (server/dist, written by `npm install` and `npm run build`) in this same
// process, so signals from an orchestrator reach the server directly and nothing but Node and
// the production dependencies is needed.
const cli = new URL('../dist/server/src/cli.js', import.meta.url);
try {
  await import(cli.href);
} catch (error) {
  if (error?.code !== 'ERR_MODULE_NOT_FOUND' || !String(error.message).includes(cli.pathname)) throw error;
  console.error('The server is not built: run `npm run build` (or `npm install`) in the repository first.');
  process.exit(1);
}
