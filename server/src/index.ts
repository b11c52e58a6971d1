export { createApp, type App, type AppOptions } from './app.js';
export { loadConfig, type Config } from './config/index.js';
export type { AppRouter } from './routers/_app.js';
