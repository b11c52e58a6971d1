/**
 * The server's router type: the single source of every procedure's input and output type.
 * Inside the repository it comes straight from the server's source; the build copies the
 * server's declarations into `dist/server/` and points this module at them, so a published
 * package carries the types without the server.
 */
export type { AppRouter } from '../../server/src/routers/_app.js';
