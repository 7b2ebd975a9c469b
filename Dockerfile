# syntax=docker/dockerfile:1
# Lucena One in a container: the API on 8080, the operations listener (health, metrics) on 9464, models, keys
# and the usage ledger in the /data volume. Build: docker build -t lucena-one .
# Run:   docker run -p 8080:8080 -p 127.0.0.1:9464:9464 -v lucena-data:/data lucena-one
#        (add --model /data/models/your.gguf, or -e LUCENA_MODEL=hf:…, to serve a real model)

# The build stage compiles the native modules (better-sqlite3, the engine's thread pool in native/ggml-pool)
# and the TypeScript, then drops the development dependencies.
FROM node:22-bookworm-slim AS build
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm rebuild --no-audit --no-fund \
  && node native/ggml-pool/build.mjs \
  && npm run build \
  && npm prune --omit=dev --no-audit --no-fund

# The run stage: the built server and its production dependencies only, as an unprivileged user.
FROM node:22-bookworm-slim
ENV NODE_ENV=production \
    LUCENA_HOST=0.0.0.0 \
    LUCENA_PORT=8080 \
    LUCENA_OPS_HOST=0.0.0.0 \
    LUCENA_OPS_PORT=9464 \
    LUCENA_DATA_DIR=/data
RUN groupadd --system lucena \
  && useradd --system --gid lucena --home-dir /data --shell /usr/sbin/nologin lucena \
  && mkdir /data && chown lucena:lucena /data
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/native ./native
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/web ./dist/web
USER lucena
VOLUME ["/data"]
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9464/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/src/cli/main.js"]
CMD ["serve"]
