#!/usr/bin/env node
// Loads the TypeScript CLI through tsx's loader in this same process, so the package needs no
// build step and signals (SIGTERM from an orchestrator) reach the server directly.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli.ts');
