import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { assertError, post, requestId, setup } from "../helpers/fake-engine.js";

/** POST /v1/completions on the fake engine: the raw prompt reaches the engine as tokens, the answer's shapes. */

const MODEL = "lucena-coder-latest";
const complete = (app: Parameters<typeof post>[0], body: unknown) => post(app, "/v1/completions", body);

describe("POST /v1/completions", () => {
  test("a raw prompt: no template, max_tokens 16 by default, a text_completion with usage", async (t) => {
    const { app, engine } = setup(t);
    const res = await complete(app, { model: MODEL, prompt: "def add(a, b):" });
    assert.equal(res.statusCode, 200, res.body);
    requestId(res);
    const body = JSON.parse(res.body) as {
      object: string;
      choices: { text: string; index: number; logprobs: null; finish_reason: string }[];
      usage: { prompt_tokens: number; completion_tokens: number };
    };
    assert.equal(body.object, "text_completion");
    assert.deepEqual(body.choices, [{ text: "Hello world!", index: 0, logprobs: null, finish_reason: "stop" }]);
    assert.deepEqual(engine.lastCall.input, { kind: "tokens", tokens: [1, 103, 106, 103] });
    assert.equal(engine.lastCall.maxTokens, 16);
    assert.equal(engine.encoder.calls.length, 0, "no chat template");
    assert.deepEqual([body.usage.prompt_tokens, body.usage.completion_tokens], [4, 3]);
  });

  test("suffix, stop, grammar and sampling reach the engine", async (t) => {
    const { app, engine } = setup(t);
    const res = await complete(app, {
      model: MODEL,
      prompt: ["a b"],
      suffix: "c",
      max_tokens: 5,
      temperature: 0.1,
      stop: "\n",
      grammar: 'root ::= "x"',
    });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(engine.encoder.texts.at(-1), { prompt: "a b", suffix: "c" });
    const o = engine.lastCall;
    assert.deepEqual(
      [o.maxTokens, o.temperature, o.stop, o.format],
      [5, 0.1, ["\n"], { kind: "grammar", gbnf: 'root ::= "x"' }],
    );
  });

  test("streamed: text chunks, the finish, the usage only when asked, [DONE]", async (t) => {
    const { app } = setup(t);
    const frames = (body: string) =>
      body
        .split("\n\n")
        .filter((f) => f.startsWith("data: "))
        .map((f) => f.slice(6));
    const plain = frames((await complete(app, { model: MODEL, prompt: "x", stream: true })).body);
    assert.equal(plain.at(-1), "[DONE]");
    const chunks = plain
      .slice(0, -1)
      .map((f) => JSON.parse(f) as { choices: { text: string; finish_reason: string | null }[] });
    assert.deepEqual(
      chunks.map((c) => [c.choices[0]?.text, c.choices[0]?.finish_reason]),
      [
        ["Hello", null],
        [" world", null],
        ["!", null],
        ["", "stop"],
      ],
    );
    const withUsage = frames(
      (await complete(app, { model: MODEL, prompt: "x", stream: true, stream_options: { include_usage: true } })).body,
    );
    const usage = JSON.parse(withUsage.at(-2)!) as { choices: unknown[]; usage: { completion_tokens: number } };
    assert.deepEqual([usage.choices, usage.usage.completion_tokens], [[], 3]);
  });

  const BAD: [string, Record<string, unknown>, string][] = [
    ["no prompt", { model: MODEL }, "prompt"],
    ["two prompts", { model: MODEL, prompt: ["a", "b"] }, "prompt"],
    ["logprobs 6", { model: MODEL, prompt: "a", logprobs: 6 }, "logprobs"],
    ["logprobs with echo", { model: MODEL, prompt: "a", logprobs: 1, echo: true }, "echo"],
    ["best_of 2", { model: MODEL, prompt: "a", best_of: 2 }, "best_of"],
    ["n 2", { model: MODEL, prompt: "a", n: 2 }, "n"],
    ["tools", { model: MODEL, prompt: "a", tools: [] }, "tools"],
    ["echo with a token prompt", { model: MODEL, prompt: [1, 2], echo: true }, "echo"],
    ["max_tokens over the output limit", { model: MODEL, prompt: "a", max_tokens: 5000 }, "max_tokens"],
    ["temperature 3", { model: MODEL, prompt: "a", temperature: 3 }, "temperature"],
  ];
  for (const [name, body, param] of BAD) {
    test(`${name}: 400 naming '${param}', nothing generated`, async (t) => {
      const { app, engine } = setup(t);
      assertError(await complete(app, body), 400, "invalid_request_error", { param });
      assert.equal(engine.calls.length, 0);
    });
  }
});
