# syntax=docker/dockerfile:1
# Parley server image: `parley start`, `parley start --no-worker`, `parley worker` or `parley migrate`.

# Stage 1: compile the server to JavaScript (server/dist) and build the web app (web/dist) with
# the dev dependencies.
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY server/package.json server/package.json
COPY client-sdk/package.json client-sdk/package.json
COPY web/package.json web/package.json
# Only the compilers are needed here: no install scripts (they build the SDK too). The patches
# are applied all the same: the web app's bundle carries the tRPC code it imports.
COPY patches ./patches
RUN npm ci --ignore-scripts --no-audit --no-fund && npx patch-package --error-on-fail
COPY server/scripts server/scripts
COPY server/src server/src
COPY drizzle ./drizzle
RUN node server/scripts/build.mjs
# The web app is built from its sources and the SDK's (which take their types from server/src).
COPY client-sdk/src client-sdk/src
COPY web web
RUN node web/scripts/build.mjs

# Stage 2: production dependencies only; no TypeScript, tsx or esbuild.
FROM node:20-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY server/package.json server/package.json
COPY client-sdk/package.json client-sdk/package.json
COPY web/package.json web/package.json
# The postinstall step applies patches/ with patch-package (a production dependency for that
# reason); the workspaces' build steps find no TypeScript and leave the building to stage 1.
COPY patches ./patches
COPY server/scripts server/scripts
COPY client-sdk/scripts client-sdk/scripts
COPY web/scripts web/scripts
# TypeScript comes in as a peer dependency of tRPC, for its types alone: nothing needs it at run
# time (.ci/run starts the compiled server without it), so it is left out of the image.
RUN npm ci --omit=dev --no-audit --no-fund && rm -rf node_modules/typescript && npm cache clean --force

# Stage 3: the runtime image; no compilers, caches or dev tools.
FROM node:20-slim AS runtime
ENV NODE_ENV=production \
    PORT=3000 \
    HOST=0.0.0.0 \
    DATA_DIR=/data \
    LOG_LEVEL=info
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY server/package.json ./server/package.json
COPY server/bin ./server/bin
# The compiled server, with the SQL migrations it applies at start.
COPY --from=build /app/server/dist ./server/dist
COPY client-sdk/package.json ./client-sdk/package.json
# The web app, served at / (the server finds it at /app/web/dist).
COPY web/package.json ./web/package.json
COPY --from=build /app/web/dist ./web/dist
# The embedded database (no DATABASE_URL) keeps its files here; the image runs as `node`.
RUN mkdir -p /data && chown node:node /data
USER node
EXPOSE 3000
# Liveness only: a worker-only container serves /healthz on PORT as well.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "server/bin/parley.js"]
CMD ["start"]
