import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { pino } from "pino";
import type { ChatMessage } from "../../src/api/chat-request.js";
import { DEFAULT_MODEL } from "../../src/config/defaults.js";
import type { ModelConfig } from "../../src/config/schema.js";
import type { UsageJournal } from "../../src/keys/ledger.js";
import type { RateLimiter } from "../../src/keys/limiter.js";
import { buildApp, type AppOptions } from "../../src/server/app.js";
import type { Logger } from "../../src/observability/log.js";
import { KeyChain, StaticKeys } from "../../src/keys/verifiers.js";
import type { KeyVerifier } from "../../src/core/principal.js";
import { ModelRegistry } from "../../src/server/registry.js";
import type { Engine, EngineEvent, EngineStats, EngineStatus, GenerateOptions } from "../../src/engines/engine.js";
import type { PromptEncoder } from "../../src/prompt/build.js";
import { errors } from "../../src/core/errors.js";

/** Tokens the fake template adds around every message (role marker, separators). */
export const FAKE_MESSAGE_OVERHEAD = 3;
/** Tokens the fake template adds at the end to open the assistant's turn. */
export const FAKE_ASSISTANT_PRIMER = 2;

/**
 * Deterministic stand-in for a tokenizer plus chat template: every message costs
 * {@link FAKE_MESSAGE_OVERHEAD} tokens plus one token per whitespace-separated word of its content, and the
 * prompt ends with {@link FAKE_ASSISTANT_PRIMER} tokens. Token ids are small stable numbers.
 */
export class FakeEncoder implements PromptEncoder {
  readonly kind = "tokenizer";
  /** Every message list it encoded, in order (the prompt builder may encode several while trimming). */
  readonly calls: ChatMessage[][] = [];

  encode(messages: readonly ChatMessage[]): number[] {
    this.calls.push(messages.map((m) => ({ ...m })));
    const out: number[] = [];
    for (const m of messages) {
      out.push(1, m.role === "system" ? 10 : m.role === "user" ? 11 : 12, 2);
      for (const w of m.content.split(/\s+/).filter(Boolean)) out.push(100 + (w.length % 50));
    }
    out.push(1, 12);
    return out;
  }

  /** Every raw prompt it encoded (legacy completions), with its suffix. */
  readonly texts: { prompt: string | readonly number[]; suffix: string | null }[] = [];

  /** A raw prompt: 1 (BOS), then one token a word; with a suffix, 5 prefix 6 suffix 7 (the FIM form). */
  encodeText(prompt: string | readonly number[], suffix: string | null): Promise<number[]> {
    this.texts.push({ prompt, suffix });
    const words = (t: string | readonly number[]) =>
      typeof t === "string"
        ? t
            .split(/\s+/)
            .filter(Boolean)
            .map((w) => 100 + (w.length % 50))
        : [...t];
    return Promise.resolve(suffix === null ? [1, ...words(prompt)] : [1, 5, ...words(prompt), 6, ...words(suffix), 7]);
  }
}

/** The prompt tokens an engine was given (its input, when a tokenizer made it). */
export function tokensOf(opts: GenerateOptions): number[] {
  if (opts.input.kind !== "tokens") throw new Error(`the engine was given ${opts.input.kind}, not tokens`);
  return opts.input.tokens;
}

/** How many tokens {@link FakeEncoder} makes of these messages: the expected prompt_tokens in tests. */
export function fakePromptTokens(messages: readonly { content: string }[]): number {
  return (
    messages.reduce((n, m) => n + FAKE_MESSAGE_OVERHEAD + m.content.split(/\s+/).filter(Boolean).length, 0) +
    FAKE_ASSISTANT_PRIMER
  );
}

export interface FakeEngineOptions {
  modelId?: string;
  status?: EngineStatus;
  contextSize?: number;
  /** The text pieces generated, one token each; generation ends with `stop` after the last one. */
  script?: string[];
}

/**
 * An Engine for fast route tests: no model, no native code. `generate` admits synchronously (throwing the
 * queue-full LucenaError when `queueFull` is set), then yields the scripted pieces (one token each) and a done
 * event: `length` when `maxTokens` is reached first, `stop` when the script ends, `cancelled` as soon as the
 * signal aborts. Every GenerateOptions received is recorded in `calls`.
 */
export class FakeEngine implements Engine {
  readonly modelId: string;
  status: EngineStatus;
  contextSize: number;
  readonly encoder = new FakeEncoder();

  /** The pieces each generation yields, one token each. */
  script: string[];
  /** When true, `generate` throws the queue-full 503 synchronously, as a real engine does when its queue is full. */
  queueFull = false;
  /** Milliseconds to wait before each piece (0: none; pieces still come on separate ticks). */
  delayMs = 0;
  /** When set, iteration throws this after `failAfter` pieces were yielded (an inference failure). */
  failWith: Error | null = null;
  failAfter = 0;

  /** Every GenerateOptions received, in order. */
  readonly calls: GenerateOptions[] = [];
  /** Every done event yielded, in order. */
  readonly finished: EngineEvent[] = [];
  loadCalls = 0;
  closeCalls = 0;

  constructor(opts: FakeEngineOptions = {}) {
    this.modelId = opts.modelId ?? "lucena-coder-latest";
    this.status = opts.status ?? "ready";
    this.contextSize = opts.contextSize ?? 2048;
    this.script = opts.script ?? ["Hello", " world", "!"];
  }

  get lastCall(): GenerateOptions {
    const c = this.calls.at(-1);
    if (!c) throw new Error("FakeEngine.generate was never called");
    return c;
  }

  async load(): Promise<void> {
    this.loadCalls++;
    this.status = "ready";
  }

  async close(): Promise<void> {
    this.closeCalls++;
  }

  /** Generations under way (started and not yet done). */
  active = 0;
  /** Text pieces yielded, over every generation. */
  yielded = 0;

  stats(): EngineStats {
    return { busy: this.active, waiting: 0, sequences: 1, promptTokensEvaluated: 0, promptTokensReused: 0 };
  }

  generate(opts: GenerateOptions): AsyncGenerator<EngineEvent, void, undefined> {
    if (this.status !== "ready") throw new Error(`FakeEngine.generate called while ${this.status}`);
    if (this.queueFull) throw errors.queueFull(this.modelId, 2);
    this.calls.push(opts);
    // Snapshot the configuration: a test may change it while an earlier stream is still running.
    return this.run(opts, [...this.script], this.delayMs, this.failWith, this.failAfter);
  }

  private async *run(
    ...args: [GenerateOptions, string[], number, Error | null, number]
  ): AsyncGenerator<EngineEvent, void, undefined> {
    this.active++;
    try {
      yield* this.script_(...args);
    } finally {
      this.active--;
    }
  }

  private async *script_(
    opts: GenerateOptions,
    script: string[],
    delayMs: number,
    failWith: Error | null,
    failAfter: number,
  ): AsyncGenerator<EngineEvent, void, undefined> {
    let produced = 0;
    const done = (finishReason: "stop" | "length" | "cancelled"): EngineEvent => {
      const ev: EngineEvent = { type: "done", finishReason, completionTokens: produced };
      this.finished.push(ev);
      return ev;
    };
    for (const piece of script) {
      if (failWith && produced === failAfter) throw failWith;
      if (produced >= opts.maxTokens) {
        yield done("length");
        return;
      }
      await wait(delayMs, opts.signal);
      if (opts.signal.aborted) {
        yield done("cancelled");
        return;
      }
      produced++;
      this.yielded++;
      yield { type: "text", text: piece };
    }
    if (failWith && produced === failAfter) throw failWith;
    if (opts.signal.aborted) {
      yield done("cancelled");
      return;
    }
    yield done("stop");
  }
}

/** Waits `ms` (at least one macrotask), or less when the signal aborts. */
function wait(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(finish, ms);
    function finish() {
      clearTimeout(timer);
      signal.removeEventListener("abort", finish);
      resolve();
    }
    signal.addEventListener("abort", finish, { once: true });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Route-test harness: an in-process app (no socket) around a FakeEngine, and helpers to read its answers.
// ---------------------------------------------------------------------------------------------------------

export const TEST_KEY = "sk-lucena-routetests0000000000000000";
export const AUTH = { authorization: `Bearer ${TEST_KEY}` } as const;
export const BODY_LIMIT = 16 * 1024;

/** DEFAULT_MODEL with a smaller output limit, a distinctive temperature and two shapes. */
export const TEST_MODEL: ModelConfig = {
  ...DEFAULT_MODEL,
  max_output_tokens: 1000,
  temperature: 0.3,
  shapes: {
    terse: { system_prompt: "Answer in one short sentence.", temperature: 0.1, top_p: 0.5, max_tokens: 64 },
    plain: { temperature: 1.1 },
  },
};

export interface TestAppOptions {
  /** Overrides of {@link TEST_MODEL}. */
  model?: Partial<ModelConfig>;
  engine?: FakeEngine;
  demo?: boolean;
  bodyLimit?: number;
  alwaysStream?: boolean;
  keepaliveMs?: number;
  usage?: UsageJournal;
  /** Keys besides TEST_KEY (which has no limits): e.g. a verifier of keys with limits. */
  keys?: KeyVerifier;
  limiter?: RateLimiter;
  /** The web console (with its key store). */
  console?: AppOptions["console"];
  /** Browser origins for the API's CORS rules. */
  corsOrigins?: string[];
  log?: Logger;
  trustProxy?: boolean | string;
  /** The admin API (with a key store). */
  admin?: AppOptions["admin"];
  signInGuard?: AppOptions["signInGuard"];
}

export interface TestApp {
  app: FastifyInstance;
  engine: FakeEngine;
  config: ModelConfig;
}

/** Builds the app around a FakeEngine and closes it when the test ends. */
export function setup(t: TestContext, opts: TestAppOptions = {}): TestApp {
  const config: ModelConfig = { ...TEST_MODEL, ...opts.model };
  const engine = opts.engine ?? new FakeEngine({ modelId: config.id });
  const app = buildApp({
    registry: new ModelRegistry([{ config, engine, demo: opts.demo ?? false }]),
    keys: opts.keys ? new KeyChain([opts.keys, new StaticKeys([TEST_KEY])]) : new StaticKeys([TEST_KEY]),
    ...(opts.usage ? { usage: opts.usage } : {}),
    ...(opts.limiter ? { limiter: opts.limiter } : {}),
    ...(opts.console ? { console: opts.console } : {}),
    ...(opts.trustProxy !== undefined ? { trustProxy: opts.trustProxy } : {}),
    ...(opts.admin ? { admin: opts.admin } : {}),
    ...(opts.signInGuard ? { signInGuard: opts.signInGuard } : {}),
    ...(opts.corsOrigins
      ? {
          transport: {
            tls: null,
            hstsMaxAgeSeconds: 0,
            corsOrigins: opts.corsOrigins,
            maxHeaderBytes: 16 * 1024,
            headersTimeoutMs: 20_000,
            requestTimeoutMs: 60_000,
            maxConnections: 1024,
          },
        }
      : {}),
    log: opts.log ?? pino({ level: "silent" }),
    bodyLimit: opts.bodyLimit ?? BODY_LIMIT,
    alwaysStream: opts.alwaysStream ?? false,
    keepaliveMs: opts.keepaliveMs ?? 60_000,
  });
  t.after(() => app.close());
  return { app, engine, config };
}

export const USER_HELLO = [{ role: "user", content: "Hello world" }];

/** POST a JSON body (any value) with the test key. */
export function post(app: FastifyInstance, url: string, body: unknown, headers: Record<string, string> = {}) {
  return app.inject({
    method: "POST",
    url,
    headers: { ...AUTH, "content-type": "application/json", ...headers },
    payload: JSON.stringify(body),
  });
}

export const chat = (app: FastifyInstance, body: unknown, headers: Record<string, string> = {}) =>
  post(app, "/v1/chat/completions", body, headers);
export const count = (app: FastifyInstance, body: unknown, headers: Record<string, string> = {}) =>
  post(app, "/v1/tokens/count", body, headers);

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Every response carries a well-formed x-request-id; returns it. */
export function requestId(res: LightMyRequestResponse): string {
  const id = res.headers["x-request-id"];
  assert.equal(typeof id, "string", "x-request-id header is missing");
  assert.match(id as string, REQUEST_ID);
  return id as string;
}

/** Asserts the exact error body of docs/api.md (`param` only for invalid_request_error) and x-request-id. */
export function assertError(
  res: LightMyRequestResponse,
  status: number,
  type: string,
  opts: { param?: string | null; message?: string | RegExp } = {},
): { message: string; type: string; code: number; param?: string | null } {
  assert.equal(res.statusCode, status, `status ${res.statusCode}: ${res.body}`);
  requestId(res);
  assert.match(String(res.headers["content-type"]), /^application\/json/);
  const body = JSON.parse(res.body) as {
    error: { message: string; type: string; code: number; param?: string | null };
  };
  assert.deepEqual(Object.keys(body), ["error"]);
  const e = body.error;
  const keys = type === "invalid_request_error" ? ["message", "type", "code", "param"] : ["message", "type", "code"];
  assert.deepEqual(Object.keys(e), keys);
  assert.equal(e.type, type);
  assert.equal(e.code, status);
  assert.equal(typeof e.message, "string");
  assert.ok(e.message.length > 0);
  if (opts.param !== undefined) assert.equal(e.param, opts.param);
  if (typeof opts.message === "string") assert.equal(e.message, opts.message);
  else if (opts.message) assert.match(e.message, opts.message);
  return e;
}

/**
 * Splits a whole SSE payload into its events (each must end with a blank line and be one line long).
 */
export function sseEvents(payload: string): string[] {
  assert.ok(
    payload.endsWith("\n\n"),
    `the stream does not end with a blank line: ${JSON.stringify(payload.slice(-40))}`,
  );
  const events = payload.slice(0, -2).split("\n\n");
  for (const ev of events) assert.ok(!ev.includes("\n") && ev.length > 0, `malformed event ${JSON.stringify(ev)}`);
  return events;
}

export interface Chunk {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: { index: number; delta: { role?: string; content?: string }; finish_reason: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  error?: unknown;
}

/**
 * A whole completion stream's events as Lucena sends them: `: connected` first, `data: [DONE]` last, and between
 * them only one-line `data:` events, whose JSON chunks are returned in order.
 */
export function completionChunks(events: readonly string[]): Chunk[] {
  assert.equal(events[0], ": connected");
  assert.equal(events.at(-1), "data: [DONE]");
  return events.slice(1, -1).map((e) => {
    assert.ok(e.startsWith("data: ") && !e.includes("\n"), `one data line per event: ${JSON.stringify(e)}`);
    return JSON.parse(e.slice("data: ".length)) as Chunk;
  });
}

/** The JSON of the `data:` events other than `[DONE]`, in order. */
export function sseData(payload: string): Chunk[] {
  return sseEvents(payload)
    .filter((e) => e.startsWith("data: ") && e !== "data: [DONE]")
    .map((e) => JSON.parse(e.slice("data: ".length)) as Chunk);
}
