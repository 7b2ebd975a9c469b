import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Value } from "@sinclair/typebox/value";
import { DEFAULT_CONFIG, DEFAULT_MODEL, DEFAULT_UPSTREAM } from "./defaults.js";
import { ConfigSchema, type Config, type ModelConfig } from "./schema.js";

/** What the command line says; each field, when given, wins over the environment and the file. */
export interface CliOverrides {
  config?: string;
  host?: string;
  port?: number;
  model?: string;
  dataDir?: string;
  tlsCert?: string;
  tlsKey?: string;
  httpPort?: number;
  opsPort?: number;
  /** Serve the default model from these replicas (comma-separated base URLs). */
  upstream?: string;
  /** The replicas' key for `upstream`. */
  upstreamKey?: string;
  /** The first model's engine settings, as llama.cpp's server flags give them (-t, -c, -np). */
  threads?: number;
  ctxSize?: number;
  parallel?: number;
  logLevel?: string;
  logFormat?: string;
}

export class ConfigError extends Error {}

type PartialModel = Partial<ModelConfig>;
type FileConfig = Partial<Omit<Config, "models">> & { models?: PartialModel[] };

function readFileConfig(path: string): FileConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not a JSON object");
    return parsed;
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

function envInt(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n)) throw new ConfigError(`${name} must be an integer, got "${raw}"`);
  return n;
}

/**
 * Builds the configuration once at start: defaults ← config file ← environment ← command line, then
 * validates it against the schema and freezes it. Nothing reads `process.env` after this.
 */
export function loadConfig(cli: CliOverrides = {}, env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const configPath = cli.config ?? env.LUCENA_CONFIG;
  const file: FileConfig = configPath ? readFileConfig(configPath) : {};
  if (
    file.models !== undefined &&
    (!Array.isArray(file.models) || file.models.some((m) => typeof m !== "object" || m === null || Array.isArray(m)))
  ) {
    throw new ConfigError("invalid configuration:\n  /models: must be a list of model objects");
  }
  const models = (file.models ?? [{}]).map((m) => withUpstreamDefaults({ ...DEFAULT_MODEL, ...m }));
  const envKeys = (env.LUCENA_API_KEYS ?? "")
    .split(",")
    .map((k) => k.trim())
    .filter(Boolean);

  const merged: Config = {
    ...DEFAULT_CONFIG,
    ...file,
    models,
    api_keys: [...(file.api_keys ?? []), ...envKeys],
  };
  if (env.LUCENA_HOST) merged.host = env.LUCENA_HOST;
  merged.port = envInt(env, "LUCENA_PORT") ?? merged.port;
  if (env.LUCENA_DATA_DIR) merged.data_dir = env.LUCENA_DATA_DIR;
  if (env.LUCENA_LOG_LEVEL) merged.log_level = env.LUCENA_LOG_LEVEL;
  // The default model is the first; there is none only with `models: []`, which the schema check below refuses.
  const first = merged.models[0];
  const modelSource = cli.model ?? env.LUCENA_MODEL;
  if (modelSource && first) merged.models[0] = { ...first, source: modelSource };
  if (merged.models[0]) {
    const m = merged.models[0];
    if (cli.threads !== undefined) m.threads = cli.threads;
    if (cli.ctxSize !== undefined) m.context_size = cli.ctxSize;
    if (cli.parallel !== undefined) m.parallel = cli.parallel;
  }
  if (cli.logLevel !== undefined) merged.log_level = cli.logLevel;
  if (env.LUCENA_LOG_FORMAT) merged.log_format = env.LUCENA_LOG_FORMAT as Config["log_format"];
  if (cli.logFormat !== undefined) merged.log_format = cli.logFormat as Config["log_format"];
  const upstream = cli.upstream ?? env.LUCENA_UPSTREAM;
  if (upstream) {
    if (modelSource)
      throw new ConfigError(
        "invalid configuration:\n  --model and --upstream both name where the default model runs: give one",
      );
    const apiKey = cli.upstreamKey ?? env.LUCENA_UPSTREAM_KEY ?? null;
    const replicas = upstream
      .split(",")
      .map((url) => url.trim())
      .filter(Boolean)
      .map((url) => ({ url, api_key: apiKey }));
    if (first) merged.models[0] = { ...first, upstream: { ...DEFAULT_UPSTREAM, ...first.upstream, replicas } };
  }
  if (env.LUCENA_TLS_CERT) merged.tls_cert = env.LUCENA_TLS_CERT;
  if (env.LUCENA_TLS_KEY) merged.tls_key = env.LUCENA_TLS_KEY;
  if (env.LUCENA_ADMIN_TOKEN) merged.admin_token = env.LUCENA_ADMIN_TOKEN;
  merged.ops_port = envInt(env, "LUCENA_OPS_PORT") ?? merged.ops_port;
  if (env.LUCENA_OPS_HOST) merged.ops_host = env.LUCENA_OPS_HOST;
  if (cli.host !== undefined) merged.host = cli.host;
  if (cli.tlsCert !== undefined) merged.tls_cert = cli.tlsCert;
  if (cli.tlsKey !== undefined) merged.tls_key = cli.tlsKey;
  if (cli.httpPort !== undefined) merged.http_port = cli.httpPort;
  if (cli.opsPort !== undefined) merged.ops_port = cli.opsPort;
  if (cli.port !== undefined) merged.port = cli.port;
  if (cli.dataDir !== undefined) merged.data_dir = cli.dataDir;

  const errors = [...Value.Errors(ConfigSchema, merged)];
  if (errors.length > 0) {
    const lines = errors.slice(0, 5).map((e) => `  ${e.path || "/"}: ${e.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
  }
  checkKeys(merged.api_keys, (file.api_keys ?? []).length);
  checkModels(merged.models);
  if ((merged.tls_cert === null) !== (merged.tls_key === null)) {
    throw new ConfigError("invalid configuration:\n  TLS needs both a certificate (tls_cert) and a key (tls_key)");
  }
  if (merged.http_port !== null && merged.tls_cert === null) {
    throw new ConfigError(
      "invalid configuration:\n  http_port (the redirect listener) needs TLS: set tls_cert and tls_key",
    );
  }
  if (merged.headers_timeout_seconds > merged.request_timeout_seconds) {
    throw new ConfigError(
      "invalid configuration:\n  headers_timeout_seconds must not be above request_timeout_seconds (the request's time includes its head)",
    );
  }
  merged.data_dir = resolve(merged.data_dir);
  return deepFreeze(merged);
}

/** An upstream block from the file, with the settings it leaves out filled in (replicas without a key get none). */
function withUpstreamDefaults(m: ModelConfig): ModelConfig {
  const u = m.upstream as Record<string, unknown> | undefined;
  if (u === undefined || typeof u !== "object" || u === null) return m;
  const replicas = Array.isArray(u.replicas)
    ? u.replicas.map((r: unknown) => (typeof r === "object" && r !== null ? { api_key: null, ...r } : r))
    : u.replicas;
  return { ...m, upstream: { ...DEFAULT_UPSTREAM, ...u, replicas } as ModelConfig["upstream"] };
}

/** Characters after `sk-lucena-` a configured key needs to be taken for a random one. */
export const MIN_KEY_CHARS = 32;

/** Texts of the placeholders in the README, the API reference and the examples of other servers' docs. */
const PLACEHOLDERS = /your[_-]?(api[_-]?)?key|replace[_-]?(me|with)|changeme|example|placeholder|x{8,}/i;

/**
 * Configured keys that work as written, so must not be guessable: a placeholder from a document, or a key too
 * short to be random, is refused, naming where it is (never the key itself) and how to make a real one.
 */
function checkKeys(keys: readonly string[], fromFile: number): void {
  keys.forEach((key, i) => {
    const body = key.slice("sk-lucena-".length);
    const where = i < fromFile ? `api_keys[${i}] in the config file` : `entry ${i - fromFile + 1} of LUCENA_API_KEYS`;
    const why = PLACEHOLDERS.test(body)
      ? "is a placeholder from an example"
      : body.length < MIN_KEY_CHARS
        ? `has ${body.length} characters after sk-lucena-, fewer than the ${MIN_KEY_CHARS} of a random key`
        : null;
    if (why) {
      throw new ConfigError(
        `invalid configuration:\n  ${where} ${why}. Make a real key with \`lucena keys create --name NAME\` ` +
          "(kept hashed in the key store), or for a configured one: sk-lucena-$(openssl rand -hex 24)",
      );
    }
  });
}

function checkModels(models: ModelConfig[]): void {
  const seen = new Set<string>();
  for (const m of models) {
    if (seen.has(m.id)) throw new ConfigError(`model id "${m.id}" is configured twice`);
    seen.add(m.id);
    if (m.upstream && m.source !== undefined)
      throw new ConfigError(`model "${m.id}": give either source (a GGUF served here) or upstream, not both`);
    if (m.default_shape !== null && !Object.hasOwn(m.shapes, m.default_shape)) {
      throw new ConfigError(`model "${m.id}": default_shape "${m.default_shape}" is not one of its shapes`);
    }
  }
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
