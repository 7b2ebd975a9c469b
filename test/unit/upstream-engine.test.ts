import assert from "node:assert/strict";
import { asHttp } from "../helpers/errors.js";
import { readFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import type { ChatMessage } from "../../src/api/chat-request.js";
import { DEFAULT_MODEL, DEFAULT_UPSTREAM } from "../../src/config/defaults.js";
import type { UpstreamConfig } from "../../src/config/schema.js";
import { sampling, type EngineEvent, type GenerateOptions } from "../../src/engines/engine.js";
import { EndpointCounter } from "../../src/engines/upstream/counter.js";
import { GgufCounter } from "../../src/engines/llama/gguf-counter.js";
import { UpstreamEngine } from "../../src/engines/upstream/upstream-engine.js";
import { createLogger } from "../../src/observability/log.js";
import { LucenaError } from "../../src/core/errors.js";
import { embeddedEngine, encodeAll } from "../helpers/engine.js";
import { testModel } from "../helpers/models.js";
import { repoRoot } from "../helpers/paths.js";
import { rng } from "../helpers/rng.js";
import { listen } from "../helpers/sockets.js";
import { until } from "../helpers/until.js";

const log = createLogger("silent");
const TRANSCRIPTS = join(repoRoot, "test", "fixtures", "transcripts");
const MODEL_ID = DEFAULT_MODEL.id;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `cond` every few milliseconds; fails the test when `ms` pass first. */

// ---------------------------------------------------------------------------------------------------------------
// A fake upstream: a real node:http server on 127.0.0.1 that answers its health path and hands every other
// request, body read and parsed, to the test's handler.

interface Seen {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The JSON body, or null when there was none. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- test bodies are read loosely
  body: any;
}

type Handler = (req: IncomingMessage, res: ServerResponse, seen: Seen) => void | Promise<void>;

interface Fake {
  port: number;
  /** http://127.0.0.1:P (a bare origin). */
  origin: string;
  /** Every request but health probes, in arrival order. */
  requests: Seen[];
  /** Health probes seen. */
  probes: Seen[];
  /** What health probes get. */
  healthStatus: number;
  handler: Handler;
  /** POSTs to /v1/chat/completions. */
  chats(): Seen[];
  /** TCP connections accepted so far. */
  connections(): number;
  stop(): Promise<void>;
}

async function fakeUpstream(t: TestContext, handler: Handler = notFound): Promise<Fake> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const seen: Seen = {
      method: req.method ?? "",
      path: req.url ?? "",
      headers: req.headers,
      body: text ? JSON.parse(text) : null,
    };
    if (req.method === "GET" && (req.url === "/v1/models" || req.url === "/health")) {
      fake.probes.push(seen);
      res.writeHead(fake.healthStatus, { "content-type": "application/json" });
      res.end(JSON.stringify({ object: "list", data: [{ id: "m", object: "model" }] }));
      return;
    }
    fake.requests.push(seen);
    await fake.handler(req, res, seen);
  });
  server.on("connection", (s) => {
    accepted++;
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  const fake: Fake = {
    port: 0,
    origin: "",
    requests: [],
    probes: [],
    healthStatus: 200,
    handler,
    chats: () => fake.requests.filter((r) => r.method === "POST" && r.path === "/v1/chat/completions"),
    connections: () => accepted,
    async stop() {
      if (!server.listening) return;
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  fake.port = await listen(server);
  fake.origin = `http://127.0.0.1:${fake.port}`;
  t.after(() => fake.stop());
  return fake;
}

/** A port nothing listens on (it was just released). */
async function closedPort(): Promise<number> {
  const s = createServer();
  const port = await listen(s);
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

function notFound(_req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(404, { "content-type": "application/json" });
  res.end(JSON.stringify({ error: { message: "Not Found", code: 404 } }));
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

/** Resolves once the chunk has been handed to the kernel (or the socket is gone). */
function write(res: ServerResponse, chunk: Uint8Array | string): Promise<void> {
  return new Promise((resolve) => {
    if (res.destroyed) return resolve();
    res.write(chunk, () => resolve());
  });
}

function sseHead(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
}

/** One OpenAI chat.completion.chunk as an SSE event. */
function chunk(
  delta: Record<string, unknown>,
  finishReason: string | null = null,
  usage?: { prompt_tokens: number; completion_tokens: number },
): string {
  const body: Record<string, unknown> = {
    id: "chatcmpl-test",
    object: "chat.completion.chunk",
    created: 1718031234,
    model: "m",
    choices: [{ index: 0, delta, finish_reason: finishReason }],
  };
  if (usage) body.usage = { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens };
  return `data: ${JSON.stringify(body)}\n\n`;
}

/** A whole, well-formed answer: the given texts, finish "stop", usage, [DONE]. */
async function answer(
  res: ServerResponse,
  texts: string[],
  usage = { prompt_tokens: 7, completion_tokens: texts.length },
): Promise<void> {
  sseHead(res);
  await write(res, chunk({ role: "assistant", content: "" }));
  for (const text of texts) await write(res, chunk({ content: text }));
  await write(res, chunk({}, "stop", usage));
  await write(res, "data: [DONE]\n\n");
  res.end();
}

/** Writes `bytes` as an SSE body cut at random byte offsets (UTF-8 characters split too), with tiny pauses. */
async function replay(res: ServerResponse, bytes: Buffer, seed: number): Promise<void> {
  const next = rng(seed);
  sseHead(res);
  for (let i = 0; i < bytes.length;) {
    const n = 1 + Math.floor(next() * 40);
    await write(res, bytes.subarray(i, i + n));
    i += n;
    if (next() < 0.25) await sleep(1);
  }
  res.end();
}

// ---------------------------------------------------------------------------------------------------------------
// The engine under test.

interface ReplicaSpec {
  url: string;
  api_key?: string | null;
}

function engineFor(t: TestContext, replicas: ReplicaSpec[], upstream: Partial<UpstreamConfig> = {}): UpstreamEngine {
  const engine = new UpstreamEngine(
    {
      ...DEFAULT_MODEL,
      upstream: {
        ...DEFAULT_UPSTREAM,
        replicas: replicas.map((r) => ({ url: r.url, api_key: r.api_key ?? null })),
        health_interval_seconds: 0.05,
        ...upstream,
      },
    },
    log,
  );
  t.after(() => engine.close());
  return engine;
}

async function startEngine(
  t: TestContext,
  replicas: ReplicaSpec[],
  upstream: Partial<UpstreamConfig> = {},
): Promise<UpstreamEngine> {
  const engine = engineFor(t, replicas, upstream);
  await engine.load();
  // Loaded: ready, or unavailable when the first probes found no replica up.
  assert.ok(engine.status === "ready" || engine.status === "unavailable", engine.status);
  return engine;
}

const MESSAGES: ChatMessage[] = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "Say hello in French." },
];

function options({
  messages = MESSAGES,
  ...over
}: Partial<GenerateOptions> & { messages?: typeof MESSAGES } = {}): GenerateOptions {
  return {
    ...sampling({ maxTokens: 64, temperature: 0.7 }),
    input: { kind: "messages", messages, estimated: false },
    signal: new AbortController().signal,
    ...over,
  };
}

interface Outcome {
  events: EngineEvent[];
  /** What the iteration threw, if it did. */
  error: unknown;
}

async function collect(gen: AsyncGenerator<EngineEvent, void, undefined>): Promise<Outcome> {
  const events: EngineEvent[] = [];
  try {
    for await (const ev of gen) events.push(ev);
    return { events, error: undefined };
  } catch (error) {
    return { events, error };
  }
}

const textOf = (events: EngineEvent[]) => events.map((e) => (e.type === "text" ? e.text : "")).join("");
const texts = (events: EngineEvent[]) => events.filter((e) => e.type === "text");

function assertLucenaError(err: unknown, status: number, type: string): asserts err is LucenaError {
  assert.ok(
    err instanceof LucenaError,
    `expected an LucenaError, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`,
  );
  assert.equal(asHttp(err).status, status, `status (message: ${err.message})`);
  assert.equal(asHttp(err).type, type);
}

/** The replica's counters and state, by its index in the pool. */
function replica(engine: UpstreamEngine, i: number) {
  const r = engine.pool.replicas[i];
  return { state: r.state, outstanding: r.outstanding, ...r.counters };
}

// ---------------------------------------------------------------------------------------------------------------

describe("UpstreamEngine: recorded transcripts", () => {
  const complete: { file: string; text: string; textEvents: number; done: EngineEvent }[] = [
    {
      file: "vllm-include-usage.sse",
      text: "Héllo — 世界 🙂\nÇa va?",
      textEvents: 6,
      done: { type: "done", finishReason: "stop", completionTokens: 9, promptTokens: 21 },
    },
    // No usage: one token per content delta, and no prompt count from the model.
    {
      file: "vllm-no-usage.sse",
      text: "Un café, s'il vous plaît",
      textEvents: 3,
      done: { type: "done", finishReason: "length", completionTokens: 3 },
    },
    {
      file: "llamacpp.sse",
      text: "héllo — 世界 🙂",
      textEvents: 3,
      done: { type: "done", finishReason: "stop", completionTokens: 6, promptTokens: 14 },
    },
    {
      file: "llamacpp-include-usage.sse",
      text: "Grüß Gott, 世界",
      textEvents: 2,
      done: { type: "done", finishReason: "length", completionTokens: 4, promptTokens: 11 },
    },
    {
      file: "sglang.sse",
      text: "Привет, мир! 🙂",
      textEvents: 2,
      done: { type: "done", finishReason: "stop", completionTokens: 7, promptTokens: 33 },
    },
    // Lucena sends usage before the finish chunk.
    {
      file: "lucena.sse",
      text: "héllo — 世界 🙂",
      textEvents: 3,
      done: { type: "done", finishReason: "stop", completionTokens: 5, promptTokens: 42 },
    },
  ];
  // Each has text, then an error object in the stream: the answer is cut, and the client gets a 500 event.
  const broken: { file: string; text: string }[] = [
    { file: "vllm-error.sse", text: "Partiel — ça" },
    { file: "llamacpp-error-data.sse", text: "Bonjour, ça va 🙂" },
    { file: "llamacpp-error-line.sse", text: "¿Qué tal, 世界?" },
    { file: "lucena-error.sse", text: "Déjà" },
  ];
  const SEEDS = [1, 2, 3];

  test("each dialect's stream, cut at random bytes, gives its text, finish reason and usage", async (t) => {
    // The transcript to replay is named by the last message, so one fake and one engine serve them all.
    const fake = await fakeUpstream(t, (_req, res, seen) => {
      const last = seen.body.messages.at(-1).content as string;
      const [file, seed] = last.split("#");
      return replay(res, readFileSync(join(TRANSCRIPTS, file)), Number(seed));
    });
    const engine = await startEngine(t, [{ url: fake.origin }], { failures_to_eject: 1000 });
    for (const c of complete) {
      for (const seed of SEEDS) {
        const { events, error } = await collect(
          engine.generate(options({ messages: [{ role: "user", content: `${c.file}#${seed}` }] })),
        );
        assert.equal(error, undefined, `${c.file} seed ${seed}: ${String(error)}`);
        assert.equal(textOf(events), c.text, `${c.file} seed ${seed}`);
        // Split deltas may arrive in one chunk, but each is its own event (never merged, never empty).
        assert.equal(texts(events).length, c.textEvents, `${c.file} seed ${seed}`);
        assert.ok(texts(events).every((e) => e.type === "text" && e.text !== ""));
        assert.deepEqual(events.at(-1), c.done, `${c.file} seed ${seed}`);
        assert.equal(events.filter((e) => e.type === "done").length, 1);
      }
    }
    for (const c of broken) {
      for (const seed of SEEDS) {
        const { events, error } = await collect(
          engine.generate(options({ messages: [{ role: "user", content: `${c.file}#${seed}` }] })),
        );
        assert.equal(textOf(events), c.text, `${c.file} seed ${seed}`);
        assert.ok(
          events.every((e) => e.type === "text"),
          `${c.file}: no done event after an error`,
        );
        assertLucenaError(error, 500, "server_error");
      }
    }
    assert.equal(fake.chats().length, (complete.length + broken.length) * SEEDS.length);
    assert.equal(engine.stats().busy, 0);
  });
});

describe("UpstreamEngine: the request a replica receives", () => {
  const okHandler: Handler = (_req, res) => answer(res, ["ok"]);

  test("bare origin with a key, defaults: /v1/chat/completions, streamed with usage, the model's id, no extensions", async (t) => {
    const fake = await fakeUpstream(t, okHandler);
    const engine = await startEngine(t, [{ url: fake.origin, api_key: "sk-replica-secret-1" }]);
    const { events, error } = await collect(engine.generate(options()));
    assert.equal(error, undefined);
    assert.deepEqual(events, [
      { type: "text", text: "ok" },
      { type: "done", finishReason: "stop", completionTokens: 1, promptTokens: 7 },
    ]);
    assert.equal(fake.chats().length, 1);
    const [req] = fake.requests;
    assert.equal(req.method, "POST");
    assert.equal(req.path, "/v1/chat/completions");
    assert.equal(req.headers.authorization, "Bearer sk-replica-secret-1");
    assert.equal(req.headers["content-type"], "application/json");
    assert.equal(req.headers.accept, "text/event-stream");
    assert.deepEqual(req.body, {
      model: MODEL_ID,
      messages: MESSAGES,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 64,
      temperature: 0.7,
      top_p: 0.95,
    });
    // Health probes go to the origin's /v1/models with the key too.
    assert.ok(fake.probes.length >= 1);
    assert.ok(
      fake.probes.every((p) => p.path === "/v1/models" && p.headers.authorization === "Bearer sk-replica-secret-1"),
    );
  });

  test("/v1 base without a key, upstream.model set, every option off-default: all sent, no authorization", async (t) => {
    const fake = await fakeUpstream(t, okHandler);
    const engine = await startEngine(t, [{ url: `${fake.origin}/v1` }], { model: "meta-llama/Llama-3.1-8B-Instruct" });
    const { error } = await collect(
      engine.generate(
        options({
          maxTokens: 5,
          temperature: 0,
          topP: 0.5,
          topK: 5,
          seed: 42,
          presencePenalty: 0.5,
          frequencyPenalty: -0.25,
          stop: ["\n\n", "END"],
        }),
      ),
    );
    assert.equal(error, undefined);
    const [req] = fake.chats();
    assert.equal(req.path, "/v1/chat/completions");
    assert.equal(req.headers.authorization, undefined);
    assert.ok(fake.probes.every((p) => p.headers.authorization === undefined));
    assert.deepEqual(req.body, {
      model: "meta-llama/Llama-3.1-8B-Instruct",
      messages: MESSAGES,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 5,
      temperature: 0,
      top_p: 0.5,
      top_k: 5,
      seed: 42,
      presence_penalty: 0.5,
      frequency_penalty: -0.25,
      stop: ["\n\n", "END"],
    });
  });

  test("seed 0 and a single stop string are sent; top_k 40 (the default) is not", async (t) => {
    const fake = await fakeUpstream(t, okHandler);
    const engine = await startEngine(t, [{ url: fake.origin }]);
    assert.equal(
      (
        await collect(
          engine.generate(options({ seed: 0, stop: ["###"], topK: 40, presencePenalty: 0, frequencyPenalty: 1 })),
        )
      ).error,
      undefined,
    );
    const body = fake.chats()[0].body;
    assert.equal(body.seed, 0);
    assert.deepEqual(body.stop, ["###"]);
    assert.equal(body.frequency_penalty, 1);
    assert.ok(!("top_k" in body) && !("presence_penalty" in body));
  });

  test("min_p and ignore_eos are sent when the request set them, and not otherwise", async (t) => {
    const fake = await fakeUpstream(t, okHandler);
    const engine = await startEngine(t, [{ url: fake.origin }]);
    assert.equal((await collect(engine.generate(options({ minP: 0.1, ignoreEos: true })))).error, undefined);
    assert.equal((await collect(engine.generate(options()))).error, undefined);
    const [set, unset] = fake.chats().map((c) => c.body);
    assert.deepEqual([set.min_p, set.ignore_eos], [0.1, true]);
    assert.ok(!("min_p" in unset) && !("ignore_eos" in unset));
  });

  test("a raw prompt goes to the replica's /v1/completions as it is; its choices' text is the answer", async (t) => {
    const fake = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      const legacy = (text: string, finish: string | null) =>
        `data: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", choices: [{ index: 0, text, finish_reason: finish }] })}\n\n`;
      await write(res, legacy("def", null));
      await write(res, legacy(" f():", "length"));
      await write(
        res,
        `data: ${JSON.stringify({ id: "cmpl-1", choices: [], usage: { prompt_tokens: 4, completion_tokens: 2 } })}\n\n`,
      );
      await write(res, "data: [DONE]\n\n");
      res.end();
    });
    const engine = await startEngine(t, [{ url: fake.origin }]);
    const { events, error } = await collect(
      engine.generate({ ...options({ seed: 3 }), input: { kind: "text", prompt: "# a function\n" } }),
    );
    assert.equal(error, undefined);
    assert.deepEqual(events, [
      { type: "text", text: "def" },
      { type: "text", text: " f():" },
      { type: "done", finishReason: "length", completionTokens: 2, promptTokens: 4 },
    ]);
    const [req] = fake.requests;
    assert.equal(req.path, "/v1/completions");
    assert.equal(req.body.prompt, "# a function\n");
    assert.equal(req.body.seed, 3);
    assert.ok(!("messages" in req.body));
  });

  test("logprobs are asked of the replica, and its tokens' logprobs come back with the text", async (t) => {
    const entry = { token: "ok", logprob: -0.5, bytes: [111, 107], top_logprobs: [] };
    const fake = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      const body = {
        id: "c",
        object: "chat.completion.chunk",
        choices: [{ index: 0, delta: { content: "ok" }, logprobs: { content: [entry] } }],
      };
      await write(res, `data: ${JSON.stringify(body)}\n\n`);
      await write(res, chunk({}, "stop", { prompt_tokens: 3, completion_tokens: 1 }));
      await write(res, "data: [DONE]\n\n");
      res.end();
    });
    const engine = await startEngine(t, [{ url: fake.origin }]);
    const { events } = await collect(engine.generate(options({ logprobs: 2 })));
    assert.deepEqual(events[0], { type: "text", text: "ok", logprobs: [entry] });
    const sent = fake.chats()[0].body;
    assert.deepEqual([sent.logprobs, sent.top_logprobs], [true, 2]);
  });

  test("a grammar or a repeat penalty is a 400 naming it, before any replica is asked", async (t) => {
    const fake = await fakeUpstream(t, okHandler);
    const engine = await startEngine(t, [{ url: fake.origin }]);
    const cases: [Partial<GenerateOptions>, string][] = [
      [{ format: { kind: "grammar", gbnf: 'root ::= "a"' } }, "grammar"],
      [{ repeatPenalty: { penalty: 1.1, lastN: 64, field: "repeat_penalty" } }, "repeat_penalty"],
      [{ repeatPenalty: { penalty: 1.2, lastN: -1, field: "repetition_penalty" } }, "repetition_penalty"],
    ];
    for (const [over, param] of cases) {
      assert.throws(
        () => engine.generate(options(over)),
        (err: unknown) => {
          assertLucenaError(err, 400, "invalid_request_error");
          assert.equal(err.param, param);
          return true;
        },
      );
    }
    assert.equal(fake.chats().length, 0);
  });

  // Each completion is read until [DONE], then the body is destroyed before undici has seen the response's end,
  // which closes the socket: every completion pays a new TCP (and TLS) handshake, against the pool's keep-alive.
  test("sequential completions reuse the replica's keep-alive connection", async (t) => {
    // As servers do, the body ends right after [DONE]. The engine yields `done` at [DONE] and reads the rest of
    // the body in the background, so a completion that starts at once may still open a second connection.
    const fake = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      await write(res, chunk({ content: "x" }, "stop", { prompt_tokens: 1, completion_tokens: 1 }));
      await sleep(2);
      res.end("data: [DONE]\n\n");
    });
    // Probes far apart, so that only the first one shares the connection.
    const engine = await startEngine(t, [{ url: fake.origin }], { health_interval_seconds: 60 });
    const before = fake.connections();
    for (let i = 0; i < 6; i++) {
      assert.equal((await collect(engine.generate(options()))).error, undefined);
      await sleep(5);
    }
    const connections = fake.connections() - before;
    assert.ok(connections <= 1, `${connections} new connections for 6 sequential completions`);
  });

  test("a base URL with a trailing slash (origin/ and origin/v1/) still posts to /v1/chat/completions", async (t) => {
    const a = await fakeUpstream(t, okHandler);
    const b = await fakeUpstream(t, okHandler);
    const ea = await startEngine(t, [{ url: `${a.origin}/` }]);
    const eb = await startEngine(t, [{ url: `${b.origin}/v1/` }]);
    assert.equal((await collect(ea.generate(options()))).error, undefined);
    assert.equal((await collect(eb.generate(options()))).error, undefined);
    assert.deepEqual(
      a.requests.map((r) => r.path),
      ["/v1/chat/completions"],
    );
    assert.deepEqual(
      b.requests.map((r) => r.path),
      ["/v1/chat/completions"],
    );
  });
});

describe("UpstreamEngine: a replica that answers a stream request with a whole JSON completion", () => {
  const completion = (content: string) => ({
    id: "x",
    object: "chat.completion",
    created: 1,
    model: "m",
    choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "length" }],
    usage: { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 },
  });

  test("a JSON client's answer is streamed too; a whole JSON answer is read whole: one text event, the replica's usage", async (t) => {
    const fake = await fakeUpstream(t, (_req, res) => json(res, 200, completion("whole answer")));
    const engine = await startEngine(t, [{ url: fake.origin }]);
    const { events, error } = await collect(engine.generate(options()));
    assert.equal(error, undefined);
    assert.deepEqual(events, [
      { type: "text", text: "whole answer" },
      { type: "done", finishReason: "length", completionTokens: 4, promptTokens: 11 },
    ]);
    const sent = fake.chats()[0].body as Record<string, unknown>;
    // Streamed, so that its headers and bytes come at once: a replica that stops answering is told apart.
    assert.equal(sent.stream, true);
    assert.deepEqual(sent.stream_options, { include_usage: true });
  });

  test("a body that is not JSON, or a 500, is retried on the other replica", async (t) => {
    for (const broken of [
      (_req: IncomingMessage, res: ServerResponse) =>
        void res.writeHead(200, { "content-type": "application/json" }).end("{not json"),
      (_req: IncomingMessage, res: ServerResponse) => json(res, 500, { error: { message: "boom" } }),
    ]) {
      const a = await fakeUpstream(t, broken);
      const b = await fakeUpstream(t, (_req, res) => json(res, 200, completion("from B")));
      const engine = await startEngine(t, [{ url: a.origin }, { url: b.origin }]);
      const { events, error } = await collect(engine.generate(options()));
      assert.equal(error, undefined);
      assert.equal(textOf(events), "from B");
      assert.equal(a.chats().length, 1);
    }
  });
});

describe("UpstreamEngine: failures before the first text", () => {
  for (const [status, failures, why] of [
    [503, 0, "busy or still loading: not a failure"],
    [429, 0, "busy: not a failure"],
    [500, 1, "a failure, counted (not yet ejected)"],
  ] as const) {
    test(`a ${status} from replica A: the answer comes from B; for A, ${why}`, async (t) => {
      const a = await fakeUpstream(t, (_req, res) => json(res, status, { error: { message: "no", code: status } }));
      const b = await fakeUpstream(t, (_req, res) => answer(res, ["from ", "B"]));
      const engine = await startEngine(t, [{ url: a.origin }, { url: b.origin }]);
      const { events, error } = await collect(engine.generate(options()));
      assert.equal(error, undefined);
      assert.deepEqual(events, [
        { type: "text", text: "from " },
        { type: "text", text: "B" },
        { type: "done", finishReason: "stop", completionTokens: 2, promptTokens: 7 },
      ]);
      assert.equal(a.chats().length, 1);
      assert.equal(b.chats().length, 1);
      assert.deepEqual(replica(engine, 0), { state: "healthy", outstanding: 0, requests: 1, failures, ejections: 0 });
      assert.deepEqual(replica(engine, 1), {
        state: "healthy",
        outstanding: 0,
        requests: 1,
        failures: 0,
        ejections: 0,
      });
    });
  }

  test("replica A closes the connection without answering: B answers, A is ejected at once", async (t) => {
    const a = await fakeUpstream(t, (req) => void req.socket.destroy());
    const b = await fakeUpstream(t, (_req, res) => answer(res, ["B"]));
    // Re-admission needs more probes than this test lasts, so the state can be checked.
    const engine = await startEngine(t, [{ url: a.origin }, { url: b.origin }], { probes_to_readmit: 1000 });
    const { events, error } = await collect(engine.generate(options()));
    assert.equal(error, undefined);
    assert.equal(textOf(events), "B");
    assert.equal(a.chats().length, 1);
    assert.deepEqual(replica(engine, 0), { state: "ejected", outstanding: 0, requests: 1, failures: 1, ejections: 1 });
    assert.deepEqual(replica(engine, 1), { state: "healthy", outstanding: 0, requests: 1, failures: 0, ejections: 0 });
    assert.equal(engine.stats().sequences, 1);
  });

  test("replica A ends a 200 stream with no text and no finish: B answers", async (t) => {
    const a = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      await write(res, chunk({ role: "assistant", content: "" }));
      res.end();
    });
    const b = await fakeUpstream(t, (_req, res) => answer(res, ["B"]));
    const engine = await startEngine(t, [{ url: a.origin }, { url: b.origin }]);
    const { events, error } = await collect(engine.generate(options()));
    assert.equal(error, undefined);
    assert.equal(textOf(events), "B");
    assert.equal(replica(engine, 0).failures, 1);
  });

  test("every replica fails: the iteration throws a 503 after one attempt on each", async (t) => {
    const fail: Handler = (_req, res) => json(res, 502, { error: "bad gateway" });
    const a = await fakeUpstream(t, fail);
    const b = await fakeUpstream(t, fail);
    const engine = await startEngine(t, [{ url: a.origin }, { url: b.origin }], { retries: 5 });
    const { events, error } = await collect(engine.generate(options()));
    assert.deepEqual(events, []);
    assertLucenaError(error, 503, "server_error");
    assert.equal(asHttp(error).headers["retry-after"], "5");
    assert.equal(a.chats().length, 1);
    assert.equal(b.chats().length, 1);
    assert.equal(engine.stats().busy, 0);
  });

  test("retries: 0 tries only one replica", async (t) => {
    const a = await fakeUpstream(t, (_req, res) => json(res, 503, {}));
    const b = await fakeUpstream(t, (_req, res) => answer(res, ["B"]));
    const engine = await startEngine(t, [{ url: a.origin }, { url: b.origin }], { retries: 0 });
    const { error } = await collect(engine.generate(options()));
    assertLucenaError(error, 503, "server_error");
    assert.equal(a.chats().length, 1);
    assert.equal(b.chats().length, 0);
  });

  test("a 400 from the upstream: LucenaError 400, not retried on the other replica", async (t) => {
    const a = await fakeUpstream(t, (_req, res) =>
      json(res, 400, { object: "error", message: "This model's maximum context length is 4096 tokens", code: 400 }),
    );
    const b = await fakeUpstream(t, (_req, res) => answer(res, ["B"]));
    const engine = await startEngine(t, [{ url: a.origin }, { url: b.origin }]);
    const { events, error } = await collect(engine.generate(options()));
    assert.deepEqual(events, []);
    assertLucenaError(error, 400, "invalid_request_error");
    assert.equal(a.chats().length, 1);
    assert.equal(b.chats().length, 0, "another replica would refuse it too");
    assert.equal(replica(engine, 0).state, "healthy");
    assert.equal(replica(engine, 0).requests, 1);
  });

  test("a 4xx error object as the stream's first event: LucenaError 400, not retried", async (t) => {
    const a = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      await write(
        res,
        `data: ${JSON.stringify({ error: { code: 400, message: "the request exceeds the available context size", type: "exceed_context_size_error" } })}\n\n`,
      );
      res.end();
    });
    const b = await fakeUpstream(t, (_req, res) => answer(res, ["B"]));
    const engine = await startEngine(t, [{ url: a.origin }, { url: b.origin }]);
    const { events, error } = await collect(engine.generate(options()));
    assert.deepEqual(events, []);
    assertLucenaError(error, 400, "invalid_request_error");
    assert.equal(b.chats().length, 0);
  });

  // A refused request says nothing of the replica's health, yet UpstreamEngine.run's catch reports "server" for
  // the 400 LucenaError that refusal() (or the in-stream 4xx branch of stream()), having reported "ok", returns:
  // the replica's failure counter grows, its failure streak is left at 1 instead of 0, and with
  // failures_to_eject: 1 a single bad request ejects it.
  test("4xx refusals are not counted as replica failures and never eject a replica", async (t) => {
    const a = await fakeUpstream(t, (_req, res) =>
      json(res, 400, { object: "error", message: "bad request", code: 400 }),
    );
    const engine = await startEngine(t, [{ url: a.origin }], { failures_to_eject: 1, probes_to_readmit: 1000 });
    assertLucenaError((await collect(engine.generate(options()))).error, 400, "invalid_request_error");
    assert.deepEqual(replica(engine, 0), { state: "healthy", outstanding: 0, requests: 1, failures: 0, ejections: 0 });
    // The next request reaches the replica again: a client's mistake does not make the model unavailable (503).
    assertLucenaError((await collect(engine.generate(options()))).error, 400, "invalid_request_error");
    assert.equal(a.chats().length, 2);
  });

  test("an in-stream 4xx error before any text is not a replica failure either", async (t) => {
    const a = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      await write(
        res,
        `data: ${JSON.stringify({ error: { code: 400, message: "too long", type: "exceed_context_size_error" } })}\n\n`,
      );
      res.end();
    });
    const engine = await startEngine(t, [{ url: a.origin }], { failures_to_eject: 1, probes_to_readmit: 1000 });
    assertLucenaError((await collect(engine.generate(options()))).error, 400, "invalid_request_error");
    assert.deepEqual(replica(engine, 0), { state: "healthy", outstanding: 0, requests: 1, failures: 0, ejections: 0 });
  });
});

describe("UpstreamEngine: failures after the first text", () => {
  test("the socket is destroyed after two content chunks: the text, then an LucenaError 500", async (t) => {
    const fake = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      await write(res, chunk({ role: "assistant", content: "" }));
      await write(res, chunk({ content: "Hello" }));
      await write(res, chunk({ content: ", wor" }));
      await sleep(30);
      res.socket?.destroy();
    });
    const engine = await startEngine(t, [{ url: fake.origin }]);
    const { events, error } = await collect(engine.generate(options()));
    assert.deepEqual(events, [
      { type: "text", text: "Hello" },
      { type: "text", text: ", wor" },
    ]);
    assertLucenaError(error, 500, "server_error");
    assert.equal(fake.chats().length, 1, "never retried once text went out");
    assert.deepEqual(replica(engine, 0), { state: "healthy", outstanding: 0, requests: 1, failures: 1, ejections: 0 });
  });

  test("the body ends cleanly after text with neither finish_reason nor [DONE]: an LucenaError 500, never a silent end", async (t) => {
    const fake = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      await write(res, chunk({ content: "Hello" }));
      await write(res, chunk({ content: ", wor" }));
      res.end();
    });
    const other = await fakeUpstream(t, (_req, res) => answer(res, ["B"]));
    const engine = await startEngine(t, [{ url: fake.origin }, { url: other.origin }]);
    const { events, error } = await collect(engine.generate(options()));
    assert.equal(textOf(events), "Hello, wor");
    assert.ok(events.every((e) => e.type === "text"));
    assertLucenaError(error, 500, "server_error");
    assert.equal(other.chats().length, 0);
  });

  test("[DONE] after text without any finish_reason: also an error", async (t) => {
    const fake = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      await write(res, chunk({ content: "Hello" }));
      await write(res, "data: [DONE]\n\n");
      res.end();
    });
    const engine = await startEngine(t, [{ url: fake.origin }]);
    const { events, error } = await collect(engine.generate(options()));
    assert.equal(textOf(events), "Hello");
    assertLucenaError(error, 500, "server_error");
  });
});

describe("UpstreamEngine: abort", () => {
  test("aborting mid-stream ends the iteration with a cancelled done at once and closes the upstream request", async (t) => {
    let closedAt: number | null = null;
    let responseClosed = false;
    const fake = await fakeUpstream(t, async (_req, res) => {
      res.once("close", () => {
        responseClosed = !res.writableEnded;
        closedAt = performance.now();
      });
      sseHead(res);
      await write(res, chunk({ role: "assistant", content: "" }));
      await write(res, chunk({ content: "one" }));
      await write(res, chunk({ content: " two" }));
      // …and then nothing more: the replica is still generating.
    });
    const engine = await startEngine(t, [{ url: fake.origin }]);
    const ac = new AbortController();
    const gen = engine.generate(options({ signal: ac.signal }));
    const events: EngineEvent[] = [];
    let abortedAt = 0;
    let doneAt = 0;
    for await (const ev of gen) {
      events.push(ev);
      if (texts(events).length === 2 && abortedAt === 0) {
        assert.equal(engine.stats().busy, 1);
        abortedAt = performance.now();
        ac.abort();
      }
      if (ev.type === "done") doneAt = performance.now();
    }
    assert.deepEqual(events.slice(0, 2), [
      { type: "text", text: "one" },
      { type: "text", text: " two" },
    ]);
    assert.equal(events.length, 3);
    const done = events[2];
    assert.equal(done.type, "done");
    assert.equal(done.type === "done" && done.finishReason, "cancelled");
    // The replica never sends more: the iteration ended, and the connection closed, because of the abort.
    assert.ok(doneAt >= abortedAt);
    await until("the upstream's request to close", () => closedAt !== null);
    assert.ok(responseClosed, "the connection closed before the response ended");
    assert.ok(closedAt! >= abortedAt);
    assert.equal(engine.stats().busy, 0);
    // A cancelled request says nothing of the replica.
    assert.deepEqual(replica(engine, 0), { state: "healthy", outstanding: 0, requests: 1, failures: 0, ejections: 0 });
  });

  // The route settles the key's token budget and the token metrics with the done event's completionTokens; the
  // embedded engine reports the tokens generated before the cancel, this engine reports 0 whatever was streamed.
  test("a cancelled done counts the text already streamed (one token per delta, as without usage)", async (t) => {
    const fake = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      await write(res, chunk({ content: "one" }));
      await write(res, chunk({ content: " two" }));
    });
    const engine = await startEngine(t, [{ url: fake.origin }]);
    const ac = new AbortController();
    const events: EngineEvent[] = [];
    for await (const ev of engine.generate(options({ signal: ac.signal }))) {
      events.push(ev);
      if (texts(events).length === 2 && !ac.signal.aborted) ac.abort();
    }
    assert.deepEqual(events.at(-1), { type: "done", finishReason: "cancelled", completionTokens: 2 });
  });

  test("aborting while waiting for the response's headers also ends with a cancelled done", async (t) => {
    let closed = false;
    const fake = await fakeUpstream(t, (_req, res) => {
      res.once("close", () => (closed = true));
      // never answers
    });
    const engine = await startEngine(t, [{ url: fake.origin }]);
    const ac = new AbortController();
    const gen = engine.generate(options({ signal: ac.signal }));
    const pending = collect(gen);
    await until("the request to arrive", () => fake.chats().length === 1);
    ac.abort();
    // The replica never answers: the iteration can end only because of the abort.
    const { events, error } = await pending;
    assert.equal(error, undefined);
    assert.deepEqual(
      events.map((e) => e.type === "done" && e.finishReason),
      ["cancelled"],
    );
    await until("the upstream's request to close", () => closed);
  });
});

describe("UpstreamEngine: the prompt a cancelled request is charged", () => {
  // docs/api.md: a request is charged the prompt tokens evaluated; the replica's word, or 0 when nothing came back.
  test("cancelled before the replica answered: 0 prompt tokens; after a usage event: the replica's count", async (t) => {
    const silent = await fakeUpstream(t, () => undefined);
    const engine = await startEngine(t, [{ url: silent.origin }]);
    const ac = new AbortController();
    const pending = collect(engine.generate(options({ signal: ac.signal })));
    await until("the request to arrive", () => silent.chats().length === 1);
    ac.abort();
    assert.deepEqual((await pending).events, [
      { type: "done", finishReason: "cancelled", completionTokens: 0, promptTokens: 0 },
    ]);

    const told = await fakeUpstream(t, async (_req, res) => {
      sseHead(res);
      await write(res, chunk({ content: "one" }, null, { prompt_tokens: 41, completion_tokens: 1 }));
      // …and then nothing more: the replica is still generating.
    });
    const engine2 = await startEngine(t, [{ url: told.origin }]);
    const ac2 = new AbortController();
    const events: EngineEvent[] = [];
    for await (const ev of engine2.generate(options({ signal: ac2.signal }))) {
      events.push(ev);
      ac2.abort();
    }
    assert.deepEqual(events.at(-1), { type: "done", finishReason: "cancelled", completionTokens: 1, promptTokens: 41 });
  });
});

describe("UpstreamEngine: admission", () => {
  test("no healthy replica: generate() throws a 503 synchronously, before any iteration", async (t) => {
    const engine = await startEngine(
      t,
      [{ url: `http://127.0.0.1:${await closedPort()}` }, { url: `http://127.0.0.1:${await closedPort()}/v1` }],
      {
        probes_to_readmit: 1000,
      },
    );
    // load() waits for the first probes, which found nothing listening.
    assert.deepEqual(
      engine.pool.replicas.map((r) => r.state),
      ["ejected", "ejected"],
    );
    assert.equal(engine.stats().sequences, 0);
    assert.equal(engine.status, "unavailable");
    let gen: unknown;
    assert.throws(
      () => (gen = engine.generate(options())),
      (err: unknown) => {
        assertLucenaError(err, 503, "server_error");
        assert.equal(asHttp(err).headers["retry-after"], "5");
        return true;
      },
    );
    assert.equal(gen, undefined);
  });

  test("stats(): busy counts requests in flight; sequences counts healthy replicas", async (t) => {
    const releases: (() => void)[] = [];
    const hold: Handler = async (_req, res) => {
      sseHead(res);
      await write(res, chunk({ content: "held" }));
      await new Promise<void>((resolve) => releases.push(resolve));
      await write(res, chunk({}, "stop", { prompt_tokens: 3, completion_tokens: 1 }));
      await write(res, "data: [DONE]\n\n");
      res.end();
    };
    const a = await fakeUpstream(t, hold);
    const b = await fakeUpstream(t, hold);
    const engine = await startEngine(t, [{ url: a.origin }, { url: b.origin }], { probes_to_readmit: 1 });
    assert.deepEqual(engine.stats(), {
      busy: 0,
      waiting: 0,
      sequences: 2,
      promptTokensEvaluated: 0,
      promptTokensReused: 0,
    });

    const g1 = engine.generate(options());
    assert.equal(engine.stats().busy, 1, "admitted: its place on a replica is taken at once");
    const g2 = engine.generate(options());
    assert.equal(engine.stats().busy, 2);
    assert.deepEqual((await g1.next()).value, { type: "text", text: "held" });
    assert.deepEqual((await g2.next()).value, { type: "text", text: "held" });
    assert.equal(engine.stats().busy, 2);
    // Least outstanding: one on each replica.
    assert.deepEqual(
      engine.replicaStats().map((r) => r.inFlight),
      [1, 1],
    );
    const rest = Promise.all([collect(g1), collect(g2)]);
    await until("both requests to be held", () => releases.length === 2);
    for (const release of releases) release();
    for (const { events, error } of await rest) {
      assert.equal(error, undefined);
      assert.deepEqual(events, [{ type: "done", finishReason: "stop", completionTokens: 1, promptTokens: 3 }]);
    }
    assert.equal(engine.stats().busy, 0);

    // One replica's health check fails: it is ejected by the next probe, and re-admitted when it passes again.
    b.healthStatus = 503;
    await until("replica B to be ejected", () => engine.stats().sequences === 1);
    assert.deepEqual(
      engine.replicaStats().map((r) => r.healthy),
      [true, false],
    );
    b.healthStatus = 200;
    await until("replica B to be re-admitted", () => engine.stats().sequences === 2);
  });
});

describe("UpstreamEngine: counting prompts", () => {
  const SHORT: ChatMessage[] = [{ role: "user", content: "Hi" }];
  const LONG: ChatMessage[] = [
    { role: "system", content: "You are a careful assistant." },
    { role: "user", content: "Write a haiku about the sea, then explain it line by line." },
  ];
  const chars = (messages: readonly ChatMessage[]) => messages.reduce((n, m) => n + m.content.length, 0);

  test("auto detects vLLM's /tokenize once, and counts with it", async (t) => {
    const fake = await fakeUpstream(t, (req, res, seen) => {
      if (req.method === "POST" && seen.path === "/tokenize" && Array.isArray(seen.body?.messages)) {
        return json(res, 200, { count: 100 + chars(seen.body.messages), max_model_len: 8192, tokens: [] });
      }
      notFound(req, res);
    });
    const engine = await startEngine(t, [{ url: `${fake.origin}/v1`, api_key: "sk-vllm" }], {
      model: "Qwen/Qwen2.5-7B-Instruct",
    });
    assert.ok(engine.encoder instanceof EndpointCounter);
    assert.equal(await engine.encoder.count(LONG), 100 + chars(LONG));
    // Lucena's endpoint first (404 here), then vLLM's, probed with a short conversation, then the count itself.
    assert.deepEqual(
      fake.requests.map((r) => r.path),
      ["/v1/tokens/count", "/tokenize", "/tokenize"],
    );
    assert.deepEqual(fake.requests[2].body, {
      model: "Qwen/Qwen2.5-7B-Instruct",
      messages: LONG,
      add_generation_prompt: true,
    });
    assert.equal(fake.requests[2].headers.authorization, "Bearer sk-vllm");
    assert.equal(await engine.encoder.count(SHORT), 100 + chars(SHORT));
    assert.deepEqual(
      fake.requests.map((r) => r.path),
      ["/v1/tokens/count", "/tokenize", "/tokenize", "/tokenize"],
      "no second detection",
    );
    assert.equal(engine.stats().busy, 0);
  });

  test("auto detects llama.cpp's /apply-template + /tokenize once, and counts with them", async (t) => {
    const TEMPLATE = (messages: ChatMessage[]) =>
      messages.map((m) => `<|${m.role}|>${m.content}<|end|>`).join("") + "<|assistant|>";
    const fake = await fakeUpstream(t, (req, res, seen) => {
      if (req.method === "POST" && seen.path === "/apply-template")
        return json(res, 200, { prompt: TEMPLATE(seen.body.messages) });
      if (req.method === "POST" && seen.path === "/tokenize") {
        // As llama-server does: without `content`, an empty token list.
        const content = typeof seen.body?.content === "string" ? (seen.body.content as string) : "";
        return json(res, 200, { tokens: Array.from({ length: Math.ceil(content.length / 3) }, (_, i) => i) });
      }
      notFound(req, res);
    });
    const engine = await startEngine(t, [{ url: fake.origin }]);
    const expected = (m: ChatMessage[]) => Math.ceil(TEMPLATE(m).length / 3);
    assert.equal(await engine.encoder.count(LONG), expected(LONG));
    assert.deepEqual(
      fake.requests.map((r) => r.path),
      ["/v1/tokens/count", "/tokenize", "/apply-template", "/tokenize", "/apply-template", "/tokenize"],
    );
    assert.deepEqual(fake.requests[4].body, { messages: LONG });
    assert.deepEqual(fake.requests[5].body, { content: TEMPLATE(LONG), add_special: true });
    assert.equal(await engine.encoder.count(SHORT), expected(SHORT));
    assert.equal(fake.requests.length, 8, "no second detection");
    assert.deepEqual(
      fake.requests.slice(6).map((r) => r.path),
      ["/apply-template", "/tokenize"],
    );
  });

  test("auto detects a Lucena server's /v1/tokens/count once, and counts with it", async (t) => {
    const fake = await fakeUpstream(t, (req, res, seen) => {
      if (req.method === "POST" && seen.path === "/v1/tokens/count") {
        return json(res, 200, {
          object: "token_count",
          model: seen.body.model,
          usage: {
            prompt_tokens: 5 + chars(seen.body.messages),
            completion_tokens: 0,
            total_tokens: 5 + chars(seen.body.messages),
          },
        });
      }
      notFound(req, res);
    });
    const engine = await startEngine(t, [{ url: fake.origin, api_key: "sk-lucena-worker-key" }]);
    assert.equal(await engine.encoder.count(LONG), 5 + chars(LONG));
    assert.equal(await engine.encoder.count(SHORT), 5 + chars(SHORT));
    assert.deepEqual(
      fake.requests.map((r) => r.path),
      ["/v1/tokens/count", "/v1/tokens/count", "/v1/tokens/count"],
    );
    assert.deepEqual(fake.requests[1].body, { model: MODEL_ID, messages: LONG });
    assert.equal(fake.requests[1].headers.authorization, "Bearer sk-lucena-worker-key");
  });

  test("a configured dialect is used without detection", async (t) => {
    const fake = await fakeUpstream(t, (req, res, seen) => {
      if (seen.path === "/tokenize") return json(res, 200, { count: 17 });
      notFound(req, res);
    });
    const engine = await startEngine(t, [{ url: fake.origin }], { tokenizer: "vllm" });
    assert.equal(await engine.encoder.count(SHORT), 17);
    assert.deepEqual(
      fake.requests.map((r) => r.path),
      ["/tokenize"],
    );
  });

  test("an upstream with no known tokenize endpoint: a 503 LucenaError", async (t) => {
    const fake = await fakeUpstream(t, notFound);
    const engine = await startEngine(t, [{ url: fake.origin }]);
    await assert.rejects(engine.encoder.count(SHORT), (err: unknown) => {
      assertLucenaError(err, 503, "server_error");
      return true;
    });
    assert.deepEqual(
      fake.requests.map((r) => r.path),
      ["/v1/tokens/count", "/tokenize", "/apply-template"],
    );
    assert.equal(engine.stats().busy, 0);
    // Not the replica's failure: it stays in the pool.
    assert.equal(replica(engine, 0).state, "healthy");
  });

  test("a GGUF tokenizer counts here, as the embedded engine's encoder does", async (t) => {
    const path = testModel({ size: "tiny" });
    const engine = await startEngine(t, [{ url: `http://127.0.0.1:${await closedPort()}` }], { tokenizer: path });
    assert.ok(engine.encoder instanceof GgufCounter);

    const llama = await embeddedEngine(t, { source: path, parallel: 1, context_size: 256, threads: 1 });

    const conversations: ChatMessage[][] = [
      SHORT,
      LONG,
      [
        ...LONG,
        { role: "assistant", content: "Waves fold on the shore." },
        { role: "user", content: "Again, shorter." },
      ],
    ];
    const counts: number[] = [];
    for (const messages of conversations) {
      const n = await engine.encoder.count(messages);
      assert.equal(n, (await encodeAll(llama, messages)).length);
      counts.push(n);
    }
    assert.ok(counts[0] > 0);
    assert.ok(
      counts[0] < counts[1] && counts[1] < counts[2],
      `counts grow with the conversation: ${counts.join(", ")}`,
    );
  });
});
