import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, test, type TestContext } from "node:test";
import { pino } from "pino";
import { DEFAULT_UPSTREAM } from "../../src/config/defaults.js";
import type { ModelConfig } from "../../src/config/schema.js";
import { UpstreamEngine } from "../../src/engines/upstream/upstream-engine.js";
import { buildApp } from "../../src/server/app.js";
import { StaticKeys } from "../../src/keys/verifiers.js";
import { health } from "../../src/server/ops.js";
import { ModelRegistry } from "../../src/server/registry.js";
import { chat, count, sseEvents, TEST_KEY, TEST_MODEL, type Chunk } from "../helpers/fake-engine.js";

/**
 * The routes in front of an upstream model: what the client sees is Lucena's wire format whatever the replica
 * sends, and the replica is sent the conversation the prompt builder resolved. The replica is a node:http server
 * speaking vLLM's dialect (usage in a final chunk with `choices: []`).
 */
interface Upstream {
  url: string;
  bodies: Record<string, unknown>[];
  counts: number;
}

async function vllmLike(t: TestContext, silenceMs: number, texts: string[]): Promise<Upstream> {
  const up: Upstream = { url: "", bodies: [], counts: 0 };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let raw = "";
    req.on("data", (c: Buffer) => (raw += c));
    req.on("end", async () => {
      if (req.url === "/v1/models") return void res.end(JSON.stringify({ object: "list", data: [] }));
      if (req.url === "/tokenize") {
        up.counts++;
        return void res.end(JSON.stringify({ count: 42, max_model_len: 8192, tokens: [] }));
      }
      if (req.url !== "/v1/chat/completions") return void res.writeHead(404).end();
      const sent = JSON.parse(raw) as Record<string, unknown>;
      up.bodies.push(sent);
      if (sent.stream === false) {
        await new Promise((r) => setTimeout(r, silenceMs));
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(
          JSON.stringify({
            id: "cmpl-up",
            object: "chat.completion",
            created: 1,
            model: "upstream-name",
            choices: [{ index: 0, message: { role: "assistant", content: texts.join("") }, finish_reason: "stop" }],
            usage: { prompt_tokens: 42, completion_tokens: texts.length, total_tokens: 42 + texts.length },
          }),
        );
      }
      res.writeHead(200, { "content-type": "text/event-stream" });
      const base = { id: "cmpl-up", object: "chat.completion.chunk", created: 1, model: "upstream-name" };
      res.write(
        `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] })}\n\n`,
      );
      await new Promise((r) => setTimeout(r, silenceMs));
      for (const text of texts)
        res.write(
          `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { content: text }, finish_reason: null }] })}\n\n`,
        );
      res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}\n\n`);
      res.write(
        `data: ${JSON.stringify({ ...base, choices: [], usage: { prompt_tokens: 42, completion_tokens: texts.length, total_tokens: 42 + texts.length } })}\n\n`,
      );
      res.end("data: [DONE]\n\n");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  up.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return up;
}

async function gateway(t: TestContext, up: Upstream, keepaliveMs = 60_000) {
  const config: ModelConfig = {
    ...TEST_MODEL,
    upstream: {
      ...DEFAULT_UPSTREAM,
      replicas: [{ url: up.url, api_key: "sk-replica" }],
      model: "upstream-name",
      health_interval_seconds: 30,
    },
  };
  const log = pino({ level: "silent" });
  const engine = new UpstreamEngine(config, log);
  await engine.load();
  const app = buildApp({
    registry: new ModelRegistry([{ config, engine, demo: false }]),
    keys: new StaticKeys([TEST_KEY]),
    log,
    bodyLimit: 1 << 20,
    alwaysStream: false,
    keepaliveMs,
  });
  t.after(async () => {
    await app.close();
    await engine.close();
  });
  return { app, config };
}

const parse = (ev: string) => JSON.parse(ev.slice("data: ".length)) as Chunk;

describe("routes over an upstream model", () => {
  test("a stream is re-framed into Lucena's sequence, with keepalives while the replica is silent", async (t) => {
    // (the replica is asked for a stream with usage, as the engine's unit tests check)
    const up = await vllmLike(t, 350, ["Hel", "lo"]);
    const { app } = await gateway(t, up, 100);
    const res = await chat(app, {
      model: TEST_MODEL.id,
      stream: true,
      max_tokens: 20,
      messages: [{ role: "user", content: "Hi" }],
    });
    assert.equal(res.statusCode, 200);
    const events = sseEvents(res.payload);
    assert.equal(events[0], ": connected");
    const firstContent = events.findIndex((e) => e.includes('"content":"Hel"'));
    const keepalives = events.slice(0, firstContent).filter((e) => e === ": keepalive").length;
    assert.ok(keepalives >= 2, `${keepalives} keepalives in 350 ms of silence at 100 ms`);
    const data = events.filter((e) => e.startsWith("data: "));
    assert.equal(data.at(-1), "data: [DONE]");
    const chunks = data.slice(0, -1).map(parse);
    assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant" });
    assert.deepEqual(
      chunks.slice(1, 3).map((c) => c.choices[0].delta.content),
      ["Hel", "lo"],
    );
    assert.deepEqual(chunks[3].choices, []);
    assert.deepEqual(chunks[3].usage, { prompt_tokens: 42, completion_tokens: 2, total_tokens: 44 });
    assert.equal(chunks[4].choices[0].finish_reason, "stop");
    assert.equal(chunks.length, 5);
    assert.ok(
      chunks.every((c) => c.model === TEST_MODEL.id && c.id === chunks[0].id),
      "Lucena's own id and model, not the replica's",
    );
  });

  test("a JSON request is streamed from the replica and answered in Lucena's shape; the replica gets the resolved conversation", async (t) => {
    const up = await vllmLike(t, 0, ["a", "b", "c"]);
    const { app } = await gateway(t, up);
    const res = await chat(app, {
      model: TEST_MODEL.id,
      max_tokens: 20,
      temperature: 0.5,
      messages: [{ role: "user", content: "Hi" }],
    });
    assert.equal(res.statusCode, 200);
    const body = JSON.parse(res.payload) as {
      object: string;
      model: string;
      choices: { message: { content: string }; finish_reason: string }[];
      usage: unknown;
    };
    assert.equal(body.object, "chat.completion");
    assert.equal(body.model, TEST_MODEL.id);
    assert.equal(body.choices[0].message.content, "abc");
    assert.equal(body.choices[0].finish_reason, "stop");
    assert.deepEqual(body.usage, { prompt_tokens: 42, completion_tokens: 3, total_tokens: 45 });
    const sent = up.bodies[0];
    assert.equal(sent.model, "upstream-name");
    assert.deepEqual(sent.messages, [
      { role: "system", content: TEST_MODEL.system_prompt },
      { role: "user", content: "Hi" },
    ]);
    assert.equal(sent.max_tokens, 20);
    assert.equal(sent.temperature, 0.5);
    assert.equal(sent.stream, true, "a JSON client's answer is streamed from the replica, whose silence is then seen");
    assert.deepEqual(sent.stream_options, { include_usage: true });
    assert.equal(up.counts, 0, "max_tokens given and a prompt far inside the budget: no count round trip");
  });

  test("a shape's system prompt and sampling reach the replica; counting uses the replica's tokenizer", async (t) => {
    const up = await vllmLike(t, 0, ["x"]);
    const { app } = await gateway(t, up);
    const res = await chat(app, { model: TEST_MODEL.id, shape: "terse", messages: [{ role: "user", content: "Hi" }] });
    assert.equal(res.statusCode, 200);
    const sent = up.bodies[0];
    assert.deepEqual(sent.messages, [
      { role: "system", content: "Answer in one short sentence." },
      { role: "user", content: "Hi" },
    ]);
    assert.equal(sent.temperature, 0.1);
    assert.equal(sent.top_p, 0.5);
    assert.equal(sent.max_tokens, 64);
    const counted = await count(app, { model: TEST_MODEL.id, messages: [{ role: "user", content: "Hi" }] });
    assert.equal(counted.statusCode, 200);
    const c = JSON.parse(counted.payload) as { usage: { prompt_tokens: number }; limits: { context_size: number } };
    assert.equal(c.usage.prompt_tokens, 42, "the replica's count");
    assert.equal(c.limits.context_size, TEST_MODEL.context_size, "limits from the configuration");
    assert.ok(up.counts >= 1);
  });
});

describe("an upstream model with every replica down", () => {
  test("reads unavailable: listed, 503 with Retry-After for completions, degraded /health; back when a replica is", async (t) => {
    const up = await vllmLike(t, 0, ["ok"]);
    const config: ModelConfig = {
      ...TEST_MODEL,
      upstream: {
        ...DEFAULT_UPSTREAM,
        replicas: [{ url: up.url, api_key: null }],
        health_interval_seconds: 0.3,
        probes_to_readmit: 2,
      },
    };
    const log = pino({ level: "silent" });
    const engine = new UpstreamEngine(config, log);
    await engine.load();
    const registry = new ModelRegistry([{ config, engine, demo: false }]);
    const app = buildApp({
      registry,
      keys: new StaticKeys([TEST_KEY]),
      log,
      bodyLimit: 1 << 20,
      alwaysStream: false,
      keepaliveMs: 60_000,
    });
    t.after(async () => {
      await app.close();
      await engine.close();
    });
    assert.equal(engine.status, "ready");
    assert.deepEqual(health(registry), { status: "ok", models: { [TEST_MODEL.id]: "ready" } });

    engine.pool.report(engine.pool.replicas[0], "connect"); // as a refused connection would
    assert.equal(engine.status, "unavailable");
    assert.deepEqual(health(registry), { status: "degraded", models: { [TEST_MODEL.id]: "unavailable" } });
    const listed = await app.inject({
      method: "GET",
      url: "/v1/models",
      headers: { authorization: `Bearer ${TEST_KEY}` },
    });
    assert.equal(listed.statusCode, 200);
    assert.equal((JSON.parse(listed.payload) as { data: { id: string }[] }).data[0].id, TEST_MODEL.id);
    const res = await chat(app, { model: TEST_MODEL.id, max_tokens: 5, messages: [{ role: "user", content: "Hi" }] });
    assert.equal(res.statusCode, 503);
    assert.equal(res.headers["retry-after"], "5");
    assert.equal((JSON.parse(res.payload) as { error: { type: string } }).error.type, "server_error");
    assert.equal(up.bodies.length, 0, "nothing was sent to the ejected replica");

    // The replica still answers its probes: two in a row (at least 0.3 s after the ejection) re-admit it.
    const deadline = Date.now() + 3000;
    while (engine.status !== "ready" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(engine.status, "ready");
    const again = await chat(app, { model: TEST_MODEL.id, max_tokens: 5, messages: [{ role: "user", content: "Hi" }] });
    assert.equal(again.statusCode, 200);
  });
});
