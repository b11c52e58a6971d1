# syntax=docker/dockerfile:1
# Parley server image: `parley start`, `parley start --no-worker`, `parley worker` or `parley migrate`.

# Stage 1: production dependencies only (tsx runs the TypeScript sources, so there is no build).
FROM node:20-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY server/package.json server/package.json
COPY client-sdk/package.json client-sdk/package.json
# The postinstall step patches the PostgreSQL driver (see scripts/patch-postgres.mjs).
COPY scripts ./scripts
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# Stage 2: the runtime image; no compilers, caches or dev tools.
FROM node:20-slim AS runtime
ENV NODE_ENV=production \
    PORT=3000 \
    HOST=0.0.0.0 \
    DATA_DIR=/data \
    LOG_LEVEL=info
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY server ./server
COPY drizzle ./drizzle
COPY client-sdk/package.json ./client-sdk/package.json
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
