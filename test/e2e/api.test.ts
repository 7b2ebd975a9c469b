import assert from "node:assert/strict";
import { request } from "node:http";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { completionChunks, sseEvents } from "../helpers/fake-engine.js";
import { testModel } from "../helpers/models.js";
import { startServer, type RunningServer } from "../helpers/server.js";
import { until } from "../helpers/until.js";

const MODEL = "lucena-coder-latest";

/** POSTs raw bytes and returns status, headers and the exact response bytes as text. */
function rawPost(url: string, key: string, body: string | Buffer, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }>(
    (resolve, reject) => {
      const req = request(url, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
      });
      req.on("response", (res) => {
        const parts: Buffer[] = [];
        res.on("data", (d: Buffer) => parts.push(d));
        res.on("end", () =>
          resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(parts).toString("utf8") }),
        );
      });
      req.on("error", reject);
      req.end(body);
    },
  );
}

/**
 * Sends a body the server will refuse before reading it (413 on Content-Length). The server answers and
 * closes while the client is still writing, so writes may fail with EPIPE: a raw socket ignores that and
 * reads whatever the server said.
 */
function oversizedPost(port: number, key: string, body: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const parts: Buffer[] = [];
    socket.on("data", (d: Buffer) => parts.push(d));
    socket.on("error", () => {}); // EPIPE / ECONNRESET once the server has answered and closed
    socket.on("close", () => {
      const raw = Buffer.concat(parts).toString("utf8");
      const status = /^HTTP\/1\.1 (\d{3})/.exec(raw);
      if (!status) return reject(new Error(`no HTTP response: ${JSON.stringify(raw.slice(0, 200))}`));
      resolve({ status: Number(status[1]), text: raw.slice(raw.indexOf("\r\n\r\n") + 4) });
    });
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${key}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
    );
    socket.end(body);
  });
}

function parseLog(logs: string[], reqId: string): Record<string, unknown> | undefined {
  for (const line of logs) {
    if (!line.startsWith("{")) continue;
    const entry = JSON.parse(line) as Record<string, unknown>;
    if (entry.msg === "request" && entry.reqId === reqId) return entry;
  }
  return undefined;
}

describe("the API over a real socket, real engine, made model", () => {
  let server: RunningServer;
  let client: OpenAI;

  before(async () => {
    server = await startServer({ model: testModel() });
    client = new OpenAI({ apiKey: server.key, baseURL: `${server.url}/v1`, maxRetries: 0 });
  });
  after(async () => {
    assert.equal(await server.stop(), 0, "SIGTERM exits 0");
  });

  test("openai SDK lists the model with the reference's fields", async () => {
    const models = await client.models.list();
    const m = models.data.find((x) => x.id === MODEL) as unknown as Record<string, unknown>;
    assert.ok(m, "the default model is listed");
    assert.deepEqual(Object.keys(m), [
      "id",
      "object",
      "created",
      "owned_by",
      "description",
      "name",
      "max_input_tokens",
      "max_output_tokens",
      "context_window",
      "default_shape",
      "available_shapes",
    ]);
    assert.equal(m.name, "Lucena Coder");
    assert.equal(m.max_input_tokens, 100000);
    assert.equal(m.max_output_tokens, 16000);
    assert.equal(m.context_window, 101000);
  });

  test("openai SDK, non-streaming: a chat.completion whose usage matches /v1/tokens/count", async () => {
    const messages = [{ role: "user" as const, content: "Reply with the single word pong." }];
    const res = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 12 });
    assert.equal(res.object, "chat.completion");
    assert.match(res.id, /^chatcmpl-/);
    assert.equal(res.choices[0].message.role, "assistant");
    assert.ok((res.choices[0].message.content ?? "").length > 0);
    assert.equal(res.choices[0].finish_reason, "length", "the made model never ends its turn, so max_tokens ends it");
    assert.equal(res.usage?.completion_tokens, 12);

    const count = await fetch(`${server.url}/v1/tokens/count`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, messages, max_tokens: 12 }),
    }).then((r) => r.json() as Promise<{ usage: { prompt_tokens: number }; _lucena: Record<string, unknown> }>);
    assert.equal(res.usage?.prompt_tokens, count.usage.prompt_tokens);
    assert.equal(res.usage?.total_tokens, count.usage.prompt_tokens + 12);
    assert.equal(count._lucena.system_prompt_source, "default");
  });

  test("openai SDK, streaming: text, then a usage chunk with empty choices, then the finish", async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      stream: true,
      max_tokens: 20,
      messages: [{ role: "user", content: "Write a binary search in Python." }],
    });
    let text = "";
    let usageChunk: OpenAI.Chat.Completions.ChatCompletionChunk | undefined;
    let finish: string | null = null;
    const ids = new Set<string>();
    for await (const chunk of stream) {
      ids.add(chunk.id);
      if (chunk.choices.length === 0) usageChunk = chunk;
      text += chunk.choices[0]?.delta?.content || "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.ok(text.length > 0);
    assert.equal(ids.size, 1, "every chunk carries the same id");
    assert.equal(usageChunk?.usage?.completion_tokens, 20);
    assert.equal(finish, "length");
  });

  test("the reference's fetch reader loop, verbatim, reads a greedy answer equal to the SDK's", async () => {
    const body = {
      model: MODEL,
      stream: true,
      temperature: 0,
      max_tokens: 24,
      messages: [{ role: "user", content: "Write a binary search in Python." }],
    };
    // --- the reference's JavaScript example, with only the URL and key changed ---
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${server.key}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let out = "";
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");
      buffer = lines.pop() || "";
      for (const line of lines) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        const content = chunk.choices[0]?.delta?.content || "";
        out += content;
      }
    }
    // --- end of the reference's example ---
    assert.ok(out.length > 0);
    const again = await client.chat.completions.create({
      ...body,
      stream: false,
    } as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming);
    assert.equal(
      again.choices[0].message.content,
      out,
      "temperature 0 is deterministic, streamed or not, with or without a reused prefix",
    );
  });

  test("raw SSE bytes: : connected, role, content…, usage, finish, [DONE], each a complete event", async () => {
    const res = await rawPost(
      `${server.url}/v1/chat/completions`,
      server.key,
      JSON.stringify({ model: MODEL, stream: true, max_tokens: 8, messages: [{ role: "user", content: "hi" }] }),
    );
    assert.equal(res.status, 200);
    assert.match(String(res.headers["content-type"]), /^text\/event-stream/);
    assert.ok(res.headers["x-request-id"], "x-request-id on the stream");
    const chunks = completionChunks(sseEvents(res.text));
    const role = chunks[0];
    assert.deepEqual(role.choices, [{ index: 0, delta: { role: "assistant" }, finish_reason: null }]);
    const finish = chunks.at(-1)!;
    assert.deepEqual(finish.choices, [{ index: 0, delta: {}, finish_reason: "length" }]);
    const usage = chunks.at(-2)!;
    assert.deepEqual(usage.choices, []);
    assert.ok(usage.usage, "the usage chunk carries usage");
    assert.equal(usage.usage.completion_tokens, 8);
    assert.equal(usage.usage.total_tokens, usage.usage.prompt_tokens + 8);
    const content = chunks.slice(1, -2);
    assert.ok(content.length > 0);
    for (const c of content) {
      assert.equal(c.choices.length, 1);
      const text = c.choices[0].delta.content;
      assert.equal(typeof text, "string");
      assert.ok(text!.length > 0, "content chunks are never empty");
      assert.equal(c.choices[0].finish_reason, null);
    }
    for (const c of chunks) {
      assert.equal(c.id, role.id);
      assert.equal(c.object, "chat.completion.chunk");
      assert.equal(c.created, role.created);
      assert.equal(c.model, MODEL);
    }
  });

  test("the reference's curl quick start body (no stream field) gets JSON; Accept: text/event-stream gets SSE", async () => {
    const body = JSON.stringify({
      model: MODEL,
      max_tokens: 4,
      messages: [{ role: "user", content: "Reply with the single word pong." }],
    });
    const json = await rawPost(`${server.url}/v1/chat/completions`, server.key, body);
    assert.equal(json.status, 200);
    assert.match(String(json.headers["content-type"]), /^application\/json/);
    assert.equal(JSON.parse(json.text).object, "chat.completion");
    const sse = await rawPost(`${server.url}/v1/chat/completions`, server.key, body, { accept: "text/event-stream" });
    assert.match(String(sse.headers["content-type"]), /^text\/event-stream/);
    assert.equal(sseEvents(sse.text).at(-1), "data: [DONE]");
  });

  test("a stop sequence ends the answer before it, with finish_reason stop", async () => {
    const base = {
      model: MODEL,
      temperature: 0,
      max_tokens: 40,
      messages: [{ role: "user" as const, content: "Count to ten." }],
    };
    const full = (await client.chat.completions.create(base)).choices[0].message.content!;
    assert.ok(full.length > 20, `a long enough greedy answer: ${JSON.stringify(full)}`);
    const stop = full.slice(12, 15);
    const cut = full.indexOf(stop);
    const res = await client.chat.completions.create({ ...base, stop: [stop] });
    assert.equal(res.choices[0].finish_reason, "stop");
    assert.equal(res.choices[0].message.content, full.slice(0, cut));

    const stream = await client.chat.completions.create({ ...base, stop, stream: true });
    let streamed = "";
    let finish: string | null = null;
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.delta?.content || "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(streamed, full.slice(0, cut), "no part of the stop sequence is streamed");
    assert.equal(finish, "stop");
  });

  test("seed makes sampling repeatable; another seed changes it", async () => {
    const body = {
      model: MODEL,
      temperature: 1,
      seed: 42,
      max_tokens: 24,
      messages: [{ role: "user" as const, content: "Say something." }],
    };
    const a = (await client.chat.completions.create(body)).choices[0].message.content;
    const b = (await client.chat.completions.create(body)).choices[0].message.content;
    const c = (await client.chat.completions.create({ ...body, seed: 43 })).choices[0].message.content;
    assert.equal(a, b);
    assert.notEqual(a, c);
  });

  test("penalties change a greedy answer; a vanishing top_p samples like greedy", async () => {
    const base = { model: MODEL, max_tokens: 48, messages: [{ role: "user" as const, content: "Repeat yourself." }] };
    const greedy = (await client.chat.completions.create({ ...base, temperature: 0 })).choices[0].message.content;
    const presence = (await client.chat.completions.create({ ...base, temperature: 0, presence_penalty: 2 })).choices[0]
      .message.content;
    const frequency = (await client.chat.completions.create({ ...base, temperature: 0, frequency_penalty: 2 }))
      .choices[0].message.content;
    assert.notEqual(presence, greedy, "presence_penalty reaches the sampler");
    assert.notEqual(frequency, greedy, "frequency_penalty reaches the sampler");
    const nucleus = (await client.chat.completions.create({ ...base, temperature: 1.5, top_p: 1e-6, seed: 9 }))
      .choices[0].message.content;
    assert.equal(nucleus, greedy, "top_p keeping only the likeliest token is greedy, whatever the temperature");
    const hot = (await client.chat.completions.create({ ...base, temperature: 1.5, seed: 9 })).choices[0].message
      .content;
    assert.notEqual(hot, greedy);
  });

  test("bad input gets the decided status and body, and the server keeps serving", async () => {
    const url = `${server.url}/v1/chat/completions`;
    const cases: Array<{ body: string | Buffer; status: number; type: string }> = [
      { body: "{not json", status: 400, type: "invalid_request_error" },
      {
        body: Buffer.from([0x7b, 0x22, 0x6d, 0x6f, 0x64, 0x65, 0x6c, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
        status: 400,
        type: "invalid_request_error",
      },
      { body: JSON.stringify({ model: MODEL, messages: [] }), status: 400, type: "invalid_request_error" },
      {
        body: JSON.stringify({ model: MODEL, messages: [{ role: "wizard", content: "x" }] }),
        status: 400,
        type: "invalid_request_error",
      },
      {
        body: JSON.stringify({ model: MODEL, temperature: 5, messages: [{ role: "user", content: "x" }] }),
        status: 400,
        type: "invalid_request_error",
      },
      {
        body: JSON.stringify({ model: MODEL, max_tokens: 0, messages: [{ role: "user", content: "x" }] }),
        status: 400,
        type: "invalid_request_error",
      },
      {
        body: JSON.stringify({ model: MODEL, max_tokens: 16001, messages: [{ role: "user", content: "x" }] }),
        status: 400,
        type: "invalid_request_error",
      },
      {
        body: JSON.stringify({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
        status: 404,
        type: "not_found",
      },
    ];
    for (const c of cases) {
      const res = await rawPost(url, server.key, c.body);
      assert.equal(res.status, c.status, `${String(c.body).slice(0, 60)} → ${res.text}`);
      const body = JSON.parse(res.text) as { error: { type: string; code: number; message: string } };
      assert.equal(body.error.type, c.type);
      assert.equal(body.error.code, c.status);
      assert.ok(res.headers["x-request-id"]);
    }
    const big = await oversizedPost(
      server.port,
      server.key,
      Buffer.from(
        JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "x".repeat(10 * 1024 * 1024) }] }),
      ),
    );
    assert.equal(big.status, 413);
    assert.deepEqual((JSON.parse(big.text) as { error: { type: string; code: number } }).error, {
      message: "Request body is larger than the limit of 4194304 bytes.",
      type: "invalid_request_error",
      code: 413,
      param: null,
    });
    const ok = await client.chat.completions.create({
      model: MODEL,
      max_tokens: 2,
      messages: [{ role: "user", content: "still there?" }],
    });
    assert.equal(ok.usage?.completion_tokens, 2);
  });

  test("a client that disconnects mid-stream stops its generation and frees its sequence", async () => {
    const ac = new AbortController();
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${server.key}`,
        "content-type": "application/json",
        "x-request-id": "e2e-disconnect-1",
      },
      body: JSON.stringify({
        model: MODEL,
        stream: true,
        max_tokens: 8000,
        messages: [{ role: "user", content: "Go on forever." }],
      }),
      signal: ac.signal,
    });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    let seen = 0;
    while (seen < 5) {
      const { value, done } = await reader.read();
      assert.ok(!done, "the stream is still going");
      seen += new TextDecoder()
        .decode(value)
        .split("\n\n")
        .filter((e) => e.includes('"content"')).length;
    }
    ac.abort();
    const line = await until("the request's log line", () => parseLog(server.logs, "e2e-disconnect-1"));
    assert.equal(line.finish, "cancelled");
    assert.equal(line.aborted, true);
    assert.ok((line.completionTokens as number) < 8000, `stopped early: ${line.completionTokens} tokens`);
    // Every sequence is free again: as many concurrent requests as there are sequences all complete.
    const all = await Promise.all(
      Array.from({ length: 4 }, () =>
        client.chat.completions.create({ model: MODEL, max_tokens: 3, messages: [{ role: "user", content: "x" }] }),
      ),
    );
    assert.ok(all.every((r) => r.usage?.completion_tokens === 3));
  });

  test("a non-streaming request whose client disconnects is cancelled too", async () => {
    const ac = new AbortController();
    const pending = fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${server.key}`,
        "content-type": "application/json",
        "x-request-id": "e2e-disconnect-2",
      },
      body: JSON.stringify({ model: MODEL, max_tokens: 8000, messages: [{ role: "user", content: "Go on forever." }] }),
      signal: ac.signal,
    }).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 300));
    ac.abort();
    assert.ok((await pending) instanceof Error);
    const line = await until("the request's log line", () => parseLog(server.logs, "e2e-disconnect-2"));
    assert.equal(line.finish, "cancelled");
    assert.ok((line.completionTokens as number) < 8000);
  });
});

describe("queueing and keepalive on a one-sequence model", () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer({
      model: testModel(),
      config: { keepalive_seconds: 0.05, models: [{ parallel: 1, queue_size: 1 }] },
    });
  });
  after(async () => {
    await server.stop();
  });

  test("a queued stream gets keepalive comments while it waits, a full queue gets 503 at once", async () => {
    const long = JSON.stringify({
      model: MODEL,
      stream: true,
      max_tokens: 1500,
      messages: [{ role: "user", content: "long" }],
    });
    const first = rawPost(`${server.url}/v1/chat/completions`, server.key, long);
    let firstEnded = false;
    void first.finally(() => (firstEnded = true));
    await new Promise((r) => setTimeout(r, 100));
    const queued = rawPost(
      `${server.url}/v1/chat/completions`,
      server.key,
      JSON.stringify({ model: MODEL, stream: true, max_tokens: 4, messages: [{ role: "user", content: "short" }] }),
    );
    await new Promise((r) => setTimeout(r, 100));
    const rejected = await rawPost(
      `${server.url}/v1/chat/completions`,
      server.key,
      JSON.stringify({ model: MODEL, max_tokens: 4, messages: [{ role: "user", content: "x" }] }),
    );
    assert.equal(rejected.status, 503);
    assert.ok(Number(rejected.headers["retry-after"]) > 0, "Retry-After on 503");
    assert.equal(JSON.parse(rejected.text).error.type, "server_error");
    assert.equal(firstEnded, false, "the 503 came while the first request still held the sequence, not after");

    const q = await queued;
    const events = sseEvents(q.text);
    assert.equal(events[0], ": connected");
    const firstContent = events.findIndex((e) => e.includes('"content"'));
    assert.ok(events.slice(0, firstContent).includes(": keepalive"), "keepalive comments before the first token");
    assert.equal(events.at(-1), "data: [DONE]");
    assert.equal(sseEvents((await first).text).at(-1), "data: [DONE]");
  });
});

describe("always_stream reproduces the hosted deployment", () => {
  test("SSE even for stream: false", async () => {
    const server = await startServer({ model: testModel(), config: { always_stream: true } });
    try {
      const res = await rawPost(
        `${server.url}/v1/chat/completions`,
        server.key,
        JSON.stringify({ model: MODEL, stream: false, max_tokens: 2, messages: [{ role: "user", content: "x" }] }),
      );
      assert.match(String(res.headers["content-type"]), /^text\/event-stream/);
      assert.equal(sseEvents(res.text).at(-1), "data: [DONE]");
    } finally {
      await server.stop();
    }
  });
});
