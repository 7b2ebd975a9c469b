import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { missingModelFile } from "../config/sources.js";
import { DEMO_DEFAULT_MAX_TOKENS } from "../config/defaults.js";
import { ConfigError, loadConfig, type CliOverrides } from "../config/load.js";
import type { Engine } from "../engines/engine.js";
import type { ModelConfig } from "../config/schema.js";
import { createLogger, type Logger } from "../observability/log.js";
import { buildApp, closeApp } from "../server/app.js";
import { announceFirstKey, announceKeyStore } from "../keys/first-key.js";
import { UsageLedger } from "../keys/ledger.js";
import { RateLimiter } from "../keys/limiter.js";
import { KeyStore } from "../keys/store.js";
import { KeyChain, StaticKeys } from "../keys/verifiers.js";
import { ModelRegistry } from "../server/registry.js";
import { packageVersion } from "../config/version.js";
import { releaseThreadPools } from "../engines/llama/thread-pool.js";
import { Metrics } from "../observability/metrics.js";
import { buildOpsApp } from "../server/ops.js";
import { openStreamCount } from "../server/sse.js";
import {
  closeRedirectServer,
  createRedirectServer,
  readTlsFiles,
  TlsFileError,
  type ConnectionLimits,
  type TlsFiles,
} from "../server/transport.js";

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
  // A local model file that is not there is said at once, not served as a model answering 503 forever.
  const missing = missingModelFile(config.models, config.data_dir);
  if (missing) {
    process.stderr.write(
      `lucena: model "${missing.id}": the model file ${missing.path} does not exist (give a GGUF file that ` +
        "does, a model `lucena models` lists, or a hub URI such as hf:user/repo/file.gguf or a URL to download)\n",
    );
    process.exit(2);
  }
  const log = createLogger(config.log_level, config.log_format);
  // The certificate and key are read once, now; one that cannot be used stops start-up as a bad config does.
  let tls: TlsFiles | null = null;
  if (config.tls_cert !== null && config.tls_key !== null) {
    try {
      tls = readTlsFiles(config.tls_cert, config.tls_key);
    } catch (err) {
      if (!(err instanceof TlsFileError)) throw err;
      process.stderr.write(`lucena: ${err.message}\n`);
      process.exit(2);
    }
  }
  const dataDir = config.data_dir;
  const registry = new ModelRegistry(
    await Promise.all(
      config.models.map(async (configured) => {
        const m = withDemoDefaults(configured);
        return { config: m, engine: await makeEngine(m, dataDir, log), demo: isDemo(m) };
      }),
    ),
  );
  const metrics = new Metrics({ models: registry, activeStreams: openStreamCount });

  if (config.trust_proxy === true) {
    log.warn(
      "trust_proxy is true: X-Forwarded-For is believed from any client, so a client can choose the address that " +
        "per-address limits count; give the proxy's address (or CIDR range) instead",
    );
  }
  if (config.console && config.admin_token === null) {
    log.info(
      "the console's sign-in and its access requests are off: set admin_token (or LUCENA_ADMIN_TOKEN) to use them",
    );
  }
  const store = new KeyStore(config.data_dir);
  for (const warning of store.warnings) log.warn(warning);
  // A first key only when there is none at all: keys given in the config or LUCENA_API_KEYS are the operator's.
  const firstKey = config.api_keys.length === 0 ? store.createFirstKey() : null;

  const limits: ConnectionLimits = {
    headersTimeoutMs: config.headers_timeout_seconds * 1000,
    requestTimeoutMs: config.request_timeout_seconds * 1000,
    maxConnections: config.max_connections,
  };
  const configuredKeys = new StaticKeys(config.api_keys);
  // The console reads this on each request; SIGHUP replaces its fields.
  const accessRequests = { open: config.access_requests, perHour: config.access_requests_per_hour };
  const app = buildApp({
    registry,
    keys: new KeyChain([configuredKeys, store]),
    limiter: new RateLimiter({ countRpmFactor: config.count_rpm_factor }),
    ...(config.admin_token ? { admin: { token: config.admin_token, store } } : {}),
    ...(config.console
      ? {
          console: {
            store,
            adminToken: config.admin_token,
            accessRequests,
            version: packageVersion(),
          },
        }
      : {}),
    trustProxy: config.trust_proxy,
    observers: [metrics.observe],
    usage: new UsageLedger(store, log),
    log,
    bodyLimit: config.body_limit_bytes,
    alwaysStream: config.always_stream,
    keepaliveMs: config.keepalive_seconds * 1000,
    transport: {
      tls,
      hstsMaxAgeSeconds: config.hsts_max_age_seconds,
      corsOrigins: config.cors_origins,
      maxHeaderBytes: config.max_header_bytes,
      ...limits,
    },
  });
  const ops = config.ops_port === null ? null : buildOpsApp({ registry, metrics, log });
  let redirect: Server | null = null;

  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    log.info({ signal }, "shutting down");
    // The redirect listener closes with the API; the operations listener last, so health and metrics answer
    // until the API has stopped.
    await Promise.all([closeApp(app, config.shutdown_grace_seconds * 1000), redirect && closeRedirectServer(redirect)]);
    await registry.close();
    // The engines are disposed: end their kept threads before exit() runs llama.cpp's static destructors.
    releaseThreadPools();
    store.close();
    await ops?.close();
    log.info("stopped");
    process.exit(0);
  };
  // SIGHUP reloads the configuration, as nginx does: the configured keys, the log level, whether the console
  // takes access requests (and how many), and each model's settings that do not touch its engine; a
  // configuration that does not load changes nothing. The key store's keys need no signal (every request sees
  // the store's changes).
  process.on("SIGHUP", () => {
    let next;
    try {
      next = loadConfig(cli);
    } catch (err) {
      log.error({ err: (err as Error).message }, "SIGHUP: the configuration did not load; nothing changed");
      return;
    }
    configuredKeys.replace(next.api_keys);
    accessRequests.open = next.access_requests;
    accessRequests.perHour = next.access_requests_per_hour;
    const needRestart = registry.reconfigure(next.models.map(withDemoDefaults));
    // Said at the old level, then the new one applies: a reload to "warn" still says it happened.
    log.info(
      { keys: next.api_keys.length, logLevel: next.log_level, ...(needRestart.length ? { needRestart } : {}) },
      needRestart.length
        ? "SIGHUP: configuration reloaded; some changes need a restart"
        : "SIGHUP: configuration reloaded",
    );
    log.level = next.log_level;
  });
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  if (ops) {
    await listenOr(() => ops.listen({ host: config.ops_host, port: config.ops_port! }), {
      what: "the operations listener's port",
      host: config.ops_host,
      port: config.ops_port!,
      flag: "--ops-port (or LUCENA_OPS_PORT; ops_port null in the config turns it off)",
    });
    const opsPort = (ops.server.address() as AddressInfo).port;
    log.info({ url: `http://${config.ops_host}:${opsPort}`, port: opsPort }, "ops listening");
  }
  await listenOr(() => app.listen({ host: config.host, port: config.port }), {
    what: "port",
    host: config.host,
    port: config.port,
    flag: "--port (or LUCENA_PORT)",
  });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  if (config.http_port !== null) {
    redirect = createRedirectServer({ httpsPort: port, maxHeaderBytes: config.max_header_bytes, limits, log });
    await listenOr(
      () =>
        new Promise<void>((resolve, reject) =>
          redirect!.once("error", reject).listen(config.http_port!, config.host, resolve),
        ),
      { what: "the redirect listener's port", host: config.host, port: config.http_port, flag: "--http-port" },
    );
    log.info({ port: (redirect.address() as AddressInfo).port, httpsPort: port }, "redirect listening");
  }
  const url = `${tls ? "https" : "http"}://${config.host}:${port}`;
  // The console's address is said with the API's, so that an operator starting the server finds it.
  log.info(
    { url, port, models: registry.ids(), ...(config.console ? { console: `${url}/console` } : {}) },
    "listening",
  );
  if (firstKey) announceFirstKey(firstKey.key, url, config.data_dir, log);
  else if (config.api_keys.length === 0) announceKeyStore(store.list().length, config.data_dir, log);
  const failed = await registry.loadAll(log);
  if (failed.length > 0 && config.on_load_failure === "exit" && !closing) {
    // As llama.cpp's server does: a model that cannot be served ends the process, with the reason in one line.
    const [first] = failed;
    process.stderr.write(
      `lucena: model "${first!.id}" could not be loaded: ${first!.reason}` +
        ` (on_load_failure "degrade" in the config serves the other models instead)\n`,
    );
    closing = true;
    await closeApp(app, 0);
    await registry.close();
    releaseThreadPools();
    store.close();
    await ops?.close();
    process.exit(1);
  }
}

const isDemo = (m: ModelConfig) => m.source === undefined && !m.upstream;

/** The demo model answers DEMO_DEFAULT_MAX_TOKENS unless its configuration says otherwise. */
function withDemoDefaults(m: ModelConfig): ModelConfig {
  return isDemo(m) && m.default_max_tokens === null ? { ...m, default_max_tokens: DEMO_DEFAULT_MAX_TOKENS } : m;
}

/**
 * Listens, or ends the process with one line when the address cannot be had (another process has the port, or
 * a port below 1024 needs privileges): what, where, and the flag that changes it; exit 1.
 */
async function listenOr(
  listen: () => Promise<unknown>,
  at: { what: string; host: string; port: number; flag: string },
): Promise<void> {
  try {
    await listen();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === "EADDRINUSE"
        ? "is already in use by another process"
        : code === "EACCES"
          ? "needs privileges this process does not have"
          : code === "EADDRNOTAVAIL"
            ? "is on an address this machine does not have"
            : null;
    if (why === null) throw err;
    process.stderr.write(`lucena: ${at.what} ${at.port} on ${at.host} ${why}; choose another with ${at.flag}\n`);
    process.exit(1);
  }
}

/**
 * The engine for a model, its module loaded only when a model needs it: a gateway never loads node-llama-cpp
 * (about 37 MB of RSS), a server of embedded models never loads the upstream client (undici, about 7 MB).
 */
async function makeEngine(m: ModelConfig, dataDir: string, log: Logger): Promise<Engine> {
  if (m.upstream) {
    const { UpstreamEngine } = await import("../engines/upstream/upstream-engine.js");
    return new UpstreamEngine(m, log);
  }
  if (m.kind === "embedding") {
    const { EmbeddingEngine } = await import("../engines/llama/embedding-engine.js");
    return new EmbeddingEngine(m, dataDir, log);
  }
  const { LlamaEngine } = await import("../engines/llama/llama-engine.js");
  return new LlamaEngine(m, dataDir, log);
}
