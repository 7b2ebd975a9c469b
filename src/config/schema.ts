import { Type, type Static } from "@sinclair/typebox";

/** A named preset: a system prompt and optional sampling defaults, picked with the request field `shape`. */
export const ShapeSchema = Type.Object(
  {
    system_prompt: Type.Optional(Type.String()),
    temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2 })),
    top_p: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1 })),
    max_tokens: Type.Optional(Type.Integer({ minimum: 1 })),
  },
  { additionalProperties: false },
);

/** A replica of an upstream model: an OpenAI-compatible base URL (vLLM, SGLang, llama.cpp's server, Lucena One). */
export const ReplicaSchema = Type.Object(
  {
    url: Type.String({ pattern: "^https?://" }),
    /** The replica's own key, sent as a Bearer token; never logged. */
    api_key: Type.Union([Type.String({ minLength: 1 }), Type.Null()]),
  },
  { additionalProperties: false },
);

/** Serve a model from other inference servers instead of the embedded engine. */
export const UpstreamSchema = Type.Object(
  {
    replicas: Type.Array(ReplicaSchema, { minItems: 1 }),
    /** The model's name on the replicas (vLLM's --served-model-name); null: this model's id. */
    model: Type.Union([Type.String({ minLength: 1 }), Type.Null()]),
    /**
     * How prompts are counted (for trimming, /v1/tokens/count and limits): "auto" tries the replicas' endpoints
     * (Lucena's /v1/tokens/count, vLLM's /tokenize, llama.cpp's /apply-template + /tokenize); "lucena", "vllm",
     * "llama.cpp" name one; anything else is a GGUF file whose tokenizer and chat template are used here
     * (a vocabulary-only GGUF is enough).
     */
    tokenizer: Type.String({ minLength: 1 }),
    /** Probed on each replica with its key; a 2xx answer is healthy. */
    health_path: Type.String({ pattern: "^/" }),
    health_interval_seconds: Type.Number({ exclusiveMinimum: 0 }),
    /** Consecutive failed requests (5xx, broken streams, timeouts) that eject a replica; a refused connection ejects at once. */
    failures_to_eject: Type.Integer({ minimum: 1 }),
    /** Consecutive passing probes that re-admit an ejected replica. */
    probes_to_readmit: Type.Integer({ minimum: 1 }),
    /** Other replicas tried when one fails before the completion's first text. */
    retries: Type.Integer({ minimum: 0 }),
    /** Longest wait for a replica's response headers; then the request goes to another replica. */
    first_byte_timeout_seconds: Type.Number({ exclusiveMinimum: 0 }),
    /** Longest silence after the headers and before the answer's first text (queueing, a long prompt's prefill). */
    first_token_timeout_seconds: Type.Number({ exclusiveMinimum: 0 }),
    /** Longest silence once the answer's text has begun before the stream counts as failed and is cut. */
    idle_timeout_seconds: Type.Number({ exclusiveMinimum: 0 }),
    /** Completions sent to one replica at once; more wait in the gateway's queue (the model's queue_size). */
    max_in_flight_per_replica: Type.Integer({ minimum: 1, maximum: 4096 }),
  },
  { additionalProperties: false },
);

export const ModelSchema = Type.Object(
  {
    id: Type.String({ minLength: 1, pattern: "^[A-Za-z0-9._:/-]+$" }),
    name: Type.String(),
    description: Type.String(),
    owned_by: Type.String(),
    created: Type.Integer({ minimum: 0 }),
    max_input_tokens: Type.Integer({ minimum: 1 }),
    max_output_tokens: Type.Integer({ minimum: 1 }),
    context_window: Type.Integer({ minimum: 1 }),
    /**
     * The answer's length when neither the request (max_tokens) nor its shape gives one; null: as much as the
     * context leaves, up to max_output_tokens (OpenAI's). The demo model's is 256 (random text is not worth
     * waiting for).
     */
    default_max_tokens: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()]),
    /** The default system prompt, used when neither the request nor a shape gives one. */
    system_prompt: Type.Union([Type.String(), Type.Null()]),
    shapes: Type.Record(Type.String({ minLength: 1 }), ShapeSchema),
    default_shape: Type.Union([Type.String(), Type.Null()]),
    /**
     * `chat`: completions (chat, Responses, legacy). `embedding`: POST /v1/embeddings only, the GGUF loaded with
     * node-llama-cpp's embedding context (embedded models only).
     */
    kind: Type.Union([Type.Literal("chat"), Type.Literal("embedding")]),
    /** A GGUF file path, or a hub URI / URL downloaded once into `<data-dir>/models`. Absent: the demo model. */
    source: Type.Optional(Type.String({ minLength: 1 })),
    /** Tokens of context allocated per sequence by the engine (limits.context_size). */
    context_size: Type.Integer({ minimum: 64 }),
    /** Sequences decoded in parallel. */
    parallel: Type.Integer({ minimum: 1, maximum: 256 }),
    /** Requests that may wait for a free sequence (upstream: a place on a replica) before new ones get 503. */
    queue_size: Type.Integer({ minimum: 0 }),
    /**
     * CPU threads for the engine; 0: every core when the engine's threads persist across decode steps
     * (native/ggml-pool, built by npm install), else all cores but one, which stays with Node's event loop;
     * fewer while other processes use the cores (cpu-share.ts). An explicit count stays fixed.
     */
    threads: Type.Integer({ minimum: 0 }),
    temperature: Type.Number({ minimum: 0, maximum: 2 }),
    /**
     * Most prompt tokens evaluated in one step, over all sequences (a prompt longer than this goes in chunks).
     * 0: 256 on a CPU, 512 with a GPU.
     */
    batch_size: Type.Integer({ minimum: 0 }),
    /**
     * While any sequence streams, each step is given the prompt tokens that keep it near this time (ms), from the
     * measured cost of earlier steps: the time per output token a stream keeps while prompts arrive beside it.
     * Larger gives waiting requests their first token sooner. 0: 250 on a CPU, 50 with a GPU.
     */
    tpot_target_ms: Type.Integer({ minimum: 0 }),
    /** llama.cpp's flash attention: true, false, or "auto" (llama.cpp decides by model and hardware). */
    flash_attention: Type.Union([Type.Boolean(), Type.Literal("auto")]),
    /**
     * Map the model file into memory instead of reading it. Off by default: where llama.cpp repacks the weights
     * for the CPU (AMX, and the AVX2 / ARM repacks of some quantizations), a mapped file is held twice.
     */
    mmap: Type.Boolean(),
    /** Served by these upstream replicas instead of the embedded engine (then `source`, `parallel`, `threads` do not apply). */
    upstream: Type.Optional(UpstreamSchema),
  },
  { additionalProperties: false },
);

export const ConfigSchema = Type.Object(
  {
    host: Type.String(),
    port: Type.Integer({ minimum: 0, maximum: 65535 }),
    data_dir: Type.String({ minLength: 1 }),
    /** Keys accepted besides the key store; compared by SHA-256 hash, never logged. */
    api_keys: Type.Array(Type.String({ pattern: "^sk-lucena-[A-Za-z0-9_-]{8,}$" })),
    /** SSE for every chat completion, as the hosted deployment does (docs/api.md, "Stream or JSON"). */
    always_stream: Type.Boolean(),
    /** Seconds of silence on an SSE stream before a `: keepalive` comment is written. */
    keepalive_seconds: Type.Number({ exclusiveMinimum: 0 }),
    body_limit_bytes: Type.Integer({ minimum: 1024 }),
    /** Token counts a key may make per minute, per chat completion its rpm allows. */
    count_rpm_factor: Type.Integer({ minimum: 1 }),
    log_level: Type.Union(["fatal", "error", "warn", "info", "debug", "trace", "silent"].map((l) => Type.Literal(l))),
    /** `auto`: lines for people on a terminal, JSON elsewhere; `json` or `pretty` always. */
    log_format: Type.Union([Type.Literal("auto"), Type.Literal("json"), Type.Literal("pretty")]),
    models: Type.Array(ModelSchema, { minItems: 1 }),
    /** PEM certificate and key files: with both, the API is served over HTTPS. */
    tls_cert: Type.Union([Type.String({ minLength: 1 }), Type.Null()]),
    tls_key: Type.Union([Type.String({ minLength: 1 }), Type.Null()]),
    /** With TLS, a plain-HTTP port whose every request is redirected to HTTPS (null: none). */
    http_port: Type.Union([Type.Integer({ minimum: 0, maximum: 65535 }), Type.Null()]),
    /** Strict-Transport-Security max-age on HTTPS responses. */
    hsts_max_age_seconds: Type.Integer({ minimum: 0 }),
    /** Browser origins allowed by CORS; empty: CORS off (no CORS headers at all). "*" allows any. */
    cors_origins: Type.Array(Type.String({ minLength: 1 })),
    /** Largest request head (request line and headers) accepted; larger gets 431. */
    max_header_bytes: Type.Integer({ minimum: 1024 }),
    /** Longest time to receive a request's head (and, over TLS, the handshake); then 408 and the connection closes. */
    headers_timeout_seconds: Type.Number({ exclusiveMinimum: 0 }),
    /** Longest time to receive a whole request, head and body (not the response); then 408 and the connection closes. */
    request_timeout_seconds: Type.Number({ exclusiveMinimum: 0 }),
    /** Most connections open at once, per listener; more are closed as soon as they are accepted. */
    max_connections: Type.Integer({ minimum: 1 }),
    /** The operations listener (health, Prometheus metrics); loopback by default, null port: off. */
    ops_host: Type.String(),
    ops_port: Type.Union([Type.Integer({ minimum: 0, maximum: 65535 }), Type.Null()]),
    /** After SIGTERM: how long requests in flight may go on before streams are ended with an error event. */
    shutdown_grace_seconds: Type.Number({ minimum: 0 }),
    /**
     * A model that cannot be downloaded or loaded: `exit` ends the process (exit 1, one line saying why), as
     * llama.cpp's server does; `degrade` keeps serving the other models, that one answering 503.
     */
    on_load_failure: Type.Union([Type.Literal("exit"), Type.Literal("degrade")]),
    /**
     * The web console on the API's port: the visitor's page at `/` (and its access requests), the operator's
     * console at `/console` (signed in with admin_token), the playground at `/playground`. false: every console
     * path answers 404.
     */
    console: Type.Boolean(),
    /** Whether visitors may ask for a key on the console's page; false closes the form (the console stays). */
    access_requests: Type.Boolean(),
    /** Access requests one client address may make per hour. */
    access_requests_per_hour: Type.Integer({ minimum: 1 }),
    /**
     * Behind a reverse proxy: trust its X-Forwarded-For / -Proto for the client's address and scheme (per-address
     * limits of the console, its cookies' Secure flag). A string lists the proxies' addresses or CIDR ranges
     * ("127.0.0.1,10.0.0.0/8"); true believes any client's header (then a client chooses its own address: warned
     * at start); false (default): the connection's address. (Fastify ignores hop counts: it cannot check the peer.)
     */
    trust_proxy: Type.Union([Type.Boolean(), Type.String({ minLength: 1 })]),
    /** Bearer token for the admin API (/admin/…); null: the admin API is off. Never an ordinary key. */
    admin_token: Type.Union([Type.String({ minLength: 16 }), Type.Null()]),
  },
  { additionalProperties: false },
);

export type ShapeConfig = Static<typeof ShapeSchema>;
export type ModelConfig = Static<typeof ModelSchema>;
export type UpstreamConfig = Static<typeof UpstreamSchema>;
export type Config = Static<typeof ConfigSchema>;
