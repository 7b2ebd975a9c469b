import { ConfigError, loadConfig, type CliOverrides } from "../config/load.js";
import { LlamaEngine } from "../engines/llama/llama-engine.js";
import { createLogger } from "../observability/log.js";
import { buildApp, closeApp } from "../server/app.js";
import { announceFirstKey } from "../keys/first-key.js";
import { usageLedger } from "../keys/ledger.js";
import { RateLimiter } from "../keys/limiter.js";
import { KeyStore } from "../keys/store.js";
import { KeyChain, StaticKeys } from "../server/auth.js";
import { ModelRegistry } from "../server/registry.js";

/** How long requests in flight may go on after SIGTERM before their connections are closed. */
const SHUTDOWN_GRACE_MS = 30_000;

export async function serveCommand(cli: CliOverrides): Promise<void> {
  let config;
  try {
    config = loadConfig(cli);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`lucena: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.log_level);
  const registry = new ModelRegistry(
    config.models.map((m) => ({ config: m, engine: new LlamaEngine(m, config.data_dir, log), demo: m.source === undefined })),
  );

  const store = new KeyStore(config.data_dir);
  const firstKey = store.createFirstKey();

  const app = buildApp({
    registry,
    keys: new KeyChain([new StaticKeys(config.api_keys), store]),
    limiter: new RateLimiter(),
    ...(config.admin_token ? { admin: { token: config.admin_token, store } } : {}),
    observers: [usageLedger(store, log)],
    log,
    bodyLimit: config.body_limit_bytes,
    alwaysStream: config.always_stream,
    keepaliveMs: config.keepalive_seconds * 1000,
  });

  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    log.info({ signal }, "shutting down");
    await closeApp(app, SHUTDOWN_GRACE_MS);
    await registry.close();
    store.close();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  log.info({ url: `http://${config.host}:${port}`, port, models: registry.ids() }, "listening");
  if (firstKey) announceFirstKey(firstKey.key, `http://${config.host}:${port}`, config.data_dir, log);
  await registry.loadAll(log);
}
