import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { testModel } from "../helpers/models.js";
import { startServer, type RunningServer } from "../helpers/server.js";

/**
 * OpenAI's logprobs on the real server and engine: each answer token's log-probability and its likeliest
 * alternatives, in chat completions (JSON and streamed) and legacy completions. Greedy answers make them
 * checkable: the chosen token is the likeliest, so it heads its own alternatives.
 */
describe("logprobs", () => {
  let server: RunningServer;
  let client: OpenAI;
  const MODEL = "lucena-coder-latest";
  before(async () => {
    server = await startServer({ model: testModel(), config: { models: [{ parallel: 1, context_size: 2048 }] } });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: server.key, maxRetries: 0 });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });

  const body = {
    model: MODEL,
    messages: [{ role: "user" as const, content: "Count to five." }],
    max_tokens: 12,
    temperature: 0,
    logprobs: true,
    top_logprobs: 3,
  };

  type Entry = OpenAI.Chat.Completions.ChatCompletionTokenLogprob;
  function checkGreedy(entries: readonly Entry[]): void {
    for (const e of entries) {
      assert.ok(e.logprob <= 0, `a log-probability: ${e.logprob}`);
      assert.equal(e.top_logprobs.length, 3);
      const lps = e.top_logprobs.map((t) => t.logprob);
      assert.deepEqual(
        lps,
        [...lps].sort((a, b) => b - a),
        "alternatives likeliest first",
      );
      assert.equal(e.top_logprobs[0].token, e.token, "greedy: the chosen token is the likeliest");
      assert.ok(Math.abs(e.top_logprobs[0].logprob - e.logprob) < 1e-6);
      assert.deepEqual(e.bytes, [...Buffer.from(e.token, "utf8")]);
      assert.ok(lps.reduce((s, l) => s + Math.exp(l), 0) <= 1 + 1e-6);
    }
  }

  test("chat, JSON: one entry a token, their text the answer's", async () => {
    const res = await client.chat.completions.create(body);
    const content = res.choices[0]?.logprobs?.content ?? [];
    assert.equal(content.length, res.usage?.completion_tokens);
    assert.equal(content.map((e) => e.token).join(""), res.choices[0]?.message.content);
    checkGreedy(content);
    const plain = await client.chat.completions.create({ ...body, logprobs: false, top_logprobs: undefined });
    assert.equal(plain.choices[0]?.logprobs ?? null, null, "none unless asked");
    assert.equal(plain.choices[0]?.message.content, res.choices[0]?.message.content, "asking changes no answer");
  });

  test("chat, streamed: each chunk carries its tokens' entries; together the JSON answer's", async () => {
    const whole = await client.chat.completions.create(body);
    const stream = await client.chat.completions.create({ ...body, stream: true });
    const entries: Entry[] = [];
    let text = "";
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      text += c.delta.content ?? "";
      if (c.delta.content) assert.ok(c.logprobs?.content, "a content chunk has its logprobs");
      entries.push(...(c.logprobs?.content ?? []));
    }
    assert.equal(text, whole.choices[0]?.message.content);
    assert.deepEqual(entries, whole.choices[0]?.logprobs?.content);
  });

  test("the Responses API: top_logprobs fills output_text.logprobs, streamed with each delta", async () => {
    const req = {
      model: MODEL,
      input: "Count to five.",
      max_output_tokens: 8,
      temperature: 0,
      top_logprobs: 3,
      include: ["message.output_text.logprobs" as const],
    };
    const res = await client.responses.create(req);
    const part = res.output[0]?.type === "message" ? res.output[0].content[0] : undefined;
    assert.ok(part?.type === "output_text");
    const entries = part.logprobs ?? [];
    assert.equal(entries.length, res.usage?.output_tokens);
    assert.equal(entries.map((e) => e.token).join(""), part.text);
    checkGreedy(entries);
    const streamed: unknown[] = [];
    for await (const ev of await client.responses.create({ ...req, stream: true })) {
      if (ev.type === "response.output_text.delta") streamed.push(...ev.logprobs);
    }
    assert.deepEqual(streamed, entries);
  });

  test("legacy completions: tokens, token_logprobs, top_logprobs and text_offset", async () => {
    const res = await client.completions.create({
      model: MODEL,
      prompt: "one two three",
      max_tokens: 6,
      temperature: 0,
      logprobs: 2,
    });
    const lp = res.choices[0]?.logprobs;
    assert.ok(lp);
    assert.equal(lp.tokens?.join(""), res.choices[0]?.text);
    assert.equal(lp.token_logprobs?.length, 6);
    assert.equal(lp.top_logprobs?.length, 6);
    for (const [i, top] of (lp.top_logprobs ?? []).entries()) {
      assert.equal(Object.keys(top).length <= 2, true);
      assert.ok(lp.tokens[i] in top, "greedy: the chosen token is among the likeliest");
    }
    let offset = 0;
    for (const [i, t] of (lp.tokens ?? []).entries()) {
      assert.equal(lp.text_offset?.[i], offset);
      offset += t.length;
    }
  });
});
