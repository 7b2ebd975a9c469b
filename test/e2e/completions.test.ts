import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { LlamaModel } from "node-llama-cpp";
import OpenAI from "openai";
import { llamaRuntime } from "../../src/engines/llama/runtime.js";
import { createLogger } from "../../src/observability/log.js";
import { testModel } from "../helpers/models.js";
import { NO_SHARED, vocabDir } from "../helpers/paths.js";
import { ledgerRow, startServer, type RunningServer } from "../helpers/server.js";

/**
 * POST /v1/completions on the real server and engine, through openai's `completions.create`: a raw prompt with
 * no chat template, and fill-in-the-middle on a made model with DeepSeek Coder's vocabulary, whose FIM tokens
 * llama.cpp finds in it; Phi-3's vocabulary has none. The prompt's tokens are checked against the vocabulary
 * itself, and each answer's usage against the ledger.
 */
describe("legacy completions and fill-in-the-middle", { skip: vocabDir ? false : NO_SHARED }, () => {
  let server: RunningServer;
  let client: OpenAI;
  let vocab: LlamaModel;
  before(async () => {
    const fim = testModel({ vocab: "deepseek-coder" });
    server = await startServer({
      config: {
        models: [
          { id: "coder-fim", source: fim, parallel: 2, context_size: 2048 },
          { id: "no-fim", source: testModel({ vocab: "phi-3" }), parallel: 1, context_size: 2048 },
        ],
      },
    });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: server.key, maxRetries: 0 });
    const llama = await llamaRuntime(createLogger("silent"));
    vocab = await llama.loadModel({ modelPath: fim, vocabOnly: true });
  });
  after(async () => {
    await vocab.dispose();
    assert.equal(await server.stop(), 0);
  });

  const row = (requestId: string | null | undefined) => ledgerRow(server, requestId)!;

  const tokens = (text: string) => vocab.tokenize(text, false, "trimLeadingSpace");
  const PREFIX = "def add(a, b):\n    ";
  const SUFFIX = "\n\nprint(add(1, 2))\n";

  test("a raw prompt: BOS and the prompt's tokens, no template; 16 tokens by default; the ledger agrees", async () => {
    const res = await client.completions.create({ model: "coder-fim", prompt: PREFIX, seed: 1 });
    assert.equal(res.object, "text_completion");
    assert.match(res.id, /^cmpl-/);
    const [choice] = res.choices;
    assert.equal(choice?.index, 0);
    assert.equal(choice?.finish_reason, "length");
    assert.ok((choice?.text.length ?? 0) > 0);
    assert.equal(res.usage?.prompt_tokens, 1 + tokens(PREFIX).length, "BOS, then the prompt as it is");
    assert.equal(res.usage?.completion_tokens, 16, "OpenAI's default max_tokens");
    const r = row(res._request_id);
    assert.deepEqual([r.prompt_tokens, r.completion_tokens], [res.usage?.prompt_tokens, res.usage?.completion_tokens]);
  });

  test("suffix: the model's FIM form, [BOS] FIM_PRE prefix FIM_SUF suffix FIM_MID", async () => {
    const res = await client.completions.create({
      model: "coder-fim",
      prompt: PREFIX,
      suffix: SUFFIX,
      max_tokens: 8,
      temperature: 0,
    });
    assert.equal(res.usage?.prompt_tokens, 1 + 1 + tokens(PREFIX).length + 1 + tokens(SUFFIX).length + 1);
    assert.equal(res.usage?.completion_tokens, 8);
    // The same request as tokens, built from the vocabulary's own FIM tokens, gives the same greedy answer.
    const { prefix, suffix, middle } = vocab.tokens.infill;
    const asTokens = await client.completions.create({
      model: "coder-fim",
      prompt: [vocab.tokens.bos!, prefix!, ...tokens(PREFIX), suffix!, ...tokens(SUFFIX), middle!],
      max_tokens: 8,
      temperature: 0,
    });
    assert.equal(asTokens.usage?.prompt_tokens, res.usage?.prompt_tokens);
    assert.equal(asTokens.choices[0]?.text, res.choices[0]?.text);
  });

  test("streamed: the same text in chunks, the finish, the usage when asked, [DONE]", async () => {
    const body = { model: "coder-fim", prompt: PREFIX, suffix: SUFFIX, max_tokens: 10, temperature: 0 };
    const whole = await client.completions.create(body);
    const stream = await client.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.Completions.CompletionUsage | undefined;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (c) {
        text += c.text;
        finish = c.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, whole.choices[0]?.text);
    assert.equal(finish, "length");
    assert.deepEqual(usage, whole.usage);
  });

  test("echo puts the prompt before the answer", async () => {
    const res = await client.completions.create({ model: "coder-fim", prompt: PREFIX, echo: true, max_tokens: 4 });
    assert.ok(res.choices[0]?.text.startsWith(PREFIX));
    assert.ok((res.choices[0]?.text.length ?? 0) > PREFIX.length);
  });

  test("refused by name: suffix on a model without FIM tokens, a token outside the vocabulary, logprobs above 5", async () => {
    const refused = async (body: Record<string, unknown>, param: string) => {
      const res = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" },
        body: JSON.stringify({ max_tokens: 4, ...body }),
      });
      assert.equal(res.status, 400);
      const err = (await res.json()) as { error: { param: string; message: string } };
      assert.equal(err.error.param, param, err.error.message);
      return err.error.message;
    };
    assert.match(await refused({ model: "no-fim", prompt: "a", suffix: "b" }, "suffix"), /fill-in-the-middle/);
    assert.match(await refused({ model: "coder-fim", prompt: [1, 10_000_000] }, "prompt"), /outside/);
    await refused({ model: "coder-fim", prompt: "a", logprobs: 6 }, "logprobs");
    await refused({ model: "coder-fim", prompt: ["a", "b"] }, "prompt");
    await refused({ model: "coder-fim", prompt: "a", max_tokens: 2048 }, "max_tokens");
    // The server still answers.
    const ok = await client.completions.create({ model: "no-fim", prompt: "a", max_tokens: 2 });
    assert.equal(ok.usage?.completion_tokens, 2);
  });
});
