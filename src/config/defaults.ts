import type { Config, ModelConfig, UpstreamConfig } from "./schema.js";

/** The reference's one model, with its limits. */
export const DEFAULT_MODEL: ModelConfig = {
  id: "lucena-coder-latest",
  name: "Lucena Coder",
  description: "Lucena Coder: advanced code generation and understanding.",
  owned_by: "lucena",
  created: 1700000000,
  max_input_tokens: 100000,
  max_output_tokens: 16000,
  context_window: 101000,
  system_prompt:
    "You are Lucena Coder, an expert programming assistant. Answer with correct, idiomatic code and short, precise explanations.",
  shapes: {},
  default_shape: null,
  default_max_tokens: null,
  kind: "chat",
  context_size: 8192,
  parallel: 4,
  queue_size: 64,
  threads: 0,
  temperature: 0.7,
  batch_size: 0,
  tpot_target_ms: 0,
  flash_attention: false,
  mmap: false,
};

/** An upstream model's settings where its configuration gives none (its replicas are always given). */
export const DEFAULT_UPSTREAM: Omit<UpstreamConfig, "replicas"> = {
  model: null,
  tokenizer: "auto",
  health_path: "/v1/models",
  health_interval_seconds: 2,
  failures_to_eject: 3,
  probes_to_readmit: 2,
  retries: 2,
  first_byte_timeout_seconds: 10,
  first_token_timeout_seconds: 120,
  idle_timeout_seconds: 30,
  max_in_flight_per_replica: 256,
};

export const DEFAULT_CONFIG: Config = {
  host: "127.0.0.1",
  port: 8080,
  data_dir: "./data",
  api_keys: [],
  always_stream: false,
  keepalive_seconds: 15,
  body_limit_bytes: 4 * 1024 * 1024,
  count_rpm_factor: 10,
  log_level: "info",
  models: [DEFAULT_MODEL],
  tls_cert: null,
  tls_key: null,
  http_port: null,
  hsts_max_age_seconds: 31536000,
  cors_origins: [],
  max_header_bytes: 16 * 1024,
  headers_timeout_seconds: 20,
  request_timeout_seconds: 60,
  max_connections: 1024,
  ops_host: "127.0.0.1",
  ops_port: 9464,
  admin_token: null,
  console: true,
  access_requests: true,
  access_requests_per_hour: 5,
  trust_proxy: false,
  shutdown_grace_seconds: 30,
  on_load_failure: "exit",
  log_format: "auto",
};

/**
 * The demo model's answer length when a request gives no max_tokens: its random text fills the whole context
 * otherwise (8,084 tokens, 7.6 s on an idle machine before the quick start's curl printed anything); 256 answer
 * within half a second. Its advertised max_output_tokens stays the reference's.
 */
export const DEMO_DEFAULT_MAX_TOKENS = 256;

/** Said at start and in /v1/models when the server makes and serves its own demo model. */
export const DEMO_NOTICE =
  "Demo model with random weights: its answers are random text. Serve a real GGUF model with " +
  "`lucena serve --model /path/to/model.gguf` (or a hub URI such as hf:user/repo/file.gguf), or set `source` in the config file.";
