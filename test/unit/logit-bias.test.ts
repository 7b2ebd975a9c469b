import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { LucenaError } from "../../src/core/errors.js";
import { llamaRuntime } from "../../src/engines/llama/runtime.js";
import { createLogger } from "../../src/observability/log.js";
import { embeddedEngine, greedyOptions } from "../helpers/engine.js";
import { testModel } from "../helpers/models.js";

/** OpenAI's logit_bias on the real engine: a bias is added to the token's logit, −100 bans it. */
describe("logit_bias on the embedded engine", () => {
  test("+100 makes a token the greedy choice at every step; −100 bans it", async (t) => {
    const llama = await llamaRuntime(createLogger("silent"));
    const vocab = await llama.loadModel({ modelPath: testModel(), vocabOnly: true });
    t.after(() => vocab.dispose());
    const [a] = vocab.tokenize("cat", false, "trimLeadingSpace");
    const [b] = vocab.tokenize("dog", false, "trimLeadingSpace");
    assert.ok(a !== undefined && b !== undefined && a !== b);
    const piece = (token: typeof a & number) => vocab.detokenize([token]);

    const engine = await embeddedEngine(t, { parallel: 1 });
    const run = async (bias: Map<number, number>) => {
      let text = "";
      for await (const ev of engine.generate({
        ...(await greedyOptions(engine, "Name an animal.", 6)),
        logitBias: bias,
      })) {
        if (ev.type === "text") text += ev.text;
      }
      return text;
    };
    assert.equal(
      await run(
        new Map([
          [a, 100],
          [b, 50],
        ]),
      ),
      piece(a).repeat(6),
    );
    assert.equal(
      await run(
        new Map([
          [a, -100],
          [b, 50],
        ]),
      ),
      piece(b).repeat(6),
      "the banned token never comes",
    );
  });

  test("a token id outside the vocabulary is a 400 naming logit_bias, before admission", async (t) => {
    const engine = await embeddedEngine(t, { parallel: 1 });
    const opts = { ...(await greedyOptions(engine, "Hi", 4)), logitBias: new Map([[10_000_000, 5]]) };
    assert.throws(
      () => engine.generate(opts),
      (err) => err instanceof LucenaError && err.param === "logit_bias" && /outside/.test(err.message),
    );
  });
});
