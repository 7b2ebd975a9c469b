import { ConfigError, loadConfig, type CliOverrides } from "../config/load.js";
import { base62 } from "../api/responses.js";
import { LlamaEngine } from "../engines/llama/llama-engine.js";
import { createLogger } from "../observability/log.js";
import { buildApp, closeApp } from "../server/app.js";
import { StaticKeys } from "../server/auth.js";
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

  // No key configured: make one for this run, shown once on the terminal (stderr), never logged.
  const runKey = config.api_keys.length === 0 ? `sk-lucena-${base62(43)}` : null;
  const keys = runKey ? [runKey] : [...config.api_keys];

  const app = buildApp({
    registry,
    keys: new StaticKeys(keys),
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
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  log.info({ url: `http://${config.host}:${port}`, port, models: registry.ids() }, "listening");
  if (runKey) {
    process.stderr.write(
      `\nNo API key is configured (LUCENA_API_KEYS or api_keys in the config file), so this run accepts this key:\n\n` +
        `  ${runKey}\n\n  curl http://${config.host}:${port}/v1/models -H "Authorization: Bearer ${runKey}"\n\n`,
    );
  }
  await registry.loadAll(log);
}
