import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { OpenAIEmbeddings } from "@langchain/openai";
import OpenAI from "openai";
import { testModel } from "../helpers/models.js";
import { ledgerRow, startServer, type RunningServer } from "../helpers/server.js";

/**
 * POST /v1/embeddings on the real server: a made embedding model (mean pooling, random weights) beside a chat
 * model, through openai's `embeddings.create` (base64 by default, decoded by the client) and LangChain's
 * OpenAIEmbeddings; the ledger holds each request's tokens.
 */
describe("embeddings", () => {
  let server: RunningServer;
  let client: OpenAI;
  const EMBED = "embed-mini";
  before(async () => {
    server = await startServer({
      config: {
        models: [
          { source: testModel(), parallel: 1, context_size: 1024 },
          { id: EMBED, kind: "embedding", source: testModel({ embedding: true }), context_size: 512 },
        ],
      },
    });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: server.key, maxRetries: 0 });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });

  const norm = (v: readonly number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const close = (a: readonly number[], b: readonly number[]) =>
    a.length === b.length && a.every((x, i) => Math.abs(x - b[i]) < 1e-5);

  test("a text: a unit vector; the same text the same vector, another text another; usage in the ledger", async () => {
    const a = await client.embeddings.create({ model: EMBED, input: "hello world" });
    assert.equal(a.object, "list");
    assert.equal(a.model, EMBED);
    const [first] = a.data;
    assert.equal(first?.object, "embedding");
    assert.equal(first?.index, 0);
    const v = first.embedding;
    assert.equal(v.length, 64, "the model's embedding size");
    assert.ok(Math.abs(norm(v) - 1) < 1e-4, `unit length: ${norm(v)}`);
    const again = await client.embeddings.create({ model: EMBED, input: "hello world" });
    assert.ok(close(again.data[0].embedding, v), "the same input, the same vector");
    const other = await client.embeddings.create({ model: EMBED, input: "something else entirely" });
    assert.ok(!close(other.data[0].embedding, v), "another input, another vector");
    assert.ok(a.usage.prompt_tokens > 0);
    assert.equal(a.usage.total_tokens, a.usage.prompt_tokens);
    assert.deepEqual(ledgerRow(server, a._request_id), {
      prompt_tokens: a.usage.prompt_tokens,
      completion_tokens: 0,
      model: EMBED,
    });
  });

  test("a batch of 64: vectors in input order, each the one its text gets alone; float and base64 agree", async () => {
    const texts = Array.from({ length: 64 }, (_, i) => `input number ${i}: ${"x".repeat(i % 7)}`);
    const batch = await client.embeddings.create({ model: EMBED, input: texts });
    assert.deepEqual(
      batch.data.map((d) => d.index),
      texts.map((_, i) => i),
    );
    for (const i of [0, 17, 63]) {
      const alone = await client.embeddings.create({ model: EMBED, input: texts[i] });
      assert.ok(close(batch.data[i].embedding, alone.data[0].embedding), `input ${i}`);
      assert.equal(alone.usage.prompt_tokens > 0, true);
    }
    const res = await fetch(`${server.url}/v1/embeddings`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: EMBED, input: texts.slice(0, 2), encoding_format: "float" }),
    });
    const floats = (await res.json()) as { data: { embedding: number[] }[] };
    assert.ok(close(floats.data[1].embedding, batch.data[1].embedding), "float equals the client's decoded base64");
    // Token lists are taken as they are.
    const tokens = await client.embeddings.create({
      model: EMBED,
      input: [
        [1, 2, 3],
        [4, 5],
      ],
    });
    assert.equal(tokens.usage.prompt_tokens, 5);
  });

  test("LangChain OpenAIEmbeddings: embedQuery and embedDocuments", async () => {
    const embeddings = new OpenAIEmbeddings({
      model: EMBED,
      apiKey: server.key,
      configuration: { baseURL: `${server.url}/v1` },
      maxRetries: 0,
    });
    const q = await embeddings.embedQuery("hello world");
    const docs = await embeddings.embedDocuments(["hello world", "another"]);
    assert.equal(q.length, 64);
    assert.equal(docs.length, 2);
    assert.ok(close(docs[0], q));
  });

  test("an upstream embedding model: a gateway hands the inputs to its replica, the same vectors come back", async () => {
    const gateway = await startServer({
      config: {
        models: [
          {
            id: EMBED,
            kind: "embedding",
            upstream: { replicas: [{ url: server.url, api_key: server.key }], health_interval_seconds: 0.2 },
          },
        ],
      },
    });
    try {
      const viaGateway = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: gateway.key, maxRetries: 0 });
      const texts = ["hello world", "another one"];
      const through = await viaGateway.embeddings.create({ model: EMBED, input: texts });
      const direct = await client.embeddings.create({ model: EMBED, input: texts });
      assert.equal(through.data.length, 2);
      for (const i of [0, 1]) assert.ok(close(through.data[i].embedding, direct.data[i].embedding));
      assert.deepEqual(through.usage, direct.usage, "the replica's usage");
      const chat = await fetch(`${gateway.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: EMBED, messages: [{ role: "user", content: "x" }] }),
      });
      assert.equal(chat.status, 400);
    } finally {
      assert.equal(await gateway.stop(), 0);
    }
  });

  test("refused by name: a chat model here, an embedding model for chat, dimensions, a too-long input", async () => {
    const post = async (path: string, body: Record<string, unknown>) => {
      const res = await fetch(`${server.url}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as { error: { param: string; message: string } } };
    };
    const chatModel = await post("/v1/embeddings", { model: "lucena-coder-latest", input: "x" });
    assert.equal(chatModel.status, 400);
    assert.equal(chatModel.body.error.param, "model");
    assert.match(chatModel.body.error.message, /chat model/);
    const embedChat = await post("/v1/chat/completions", { model: EMBED, messages: [{ role: "user", content: "x" }] });
    assert.equal(embedChat.status, 400);
    assert.match(embedChat.body.error.message, /embedding model/);
    const dims = await post("/v1/embeddings", { model: EMBED, input: "x", dimensions: 32 });
    assert.deepEqual([dims.status, dims.body.error.param], [400, "dimensions"]);
    const long = await post("/v1/embeddings", { model: EMBED, input: "word ".repeat(2000) });
    assert.deepEqual([long.status, long.body.error.param], [400, "input"]);
    // The model still answers.
    assert.equal((await client.embeddings.create({ model: EMBED, input: "x" })).data.length, 1);
  });
});
