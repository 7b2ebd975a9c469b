import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Sampling } from "../../src/engines/engine.js";
import { llamaRuntime } from "../../src/engines/llama/runtime.js";
import { createLogger } from "../../src/observability/log.js";
import { embeddedEngine, encodeAll, greedyOptions } from "../helpers/engine.js";
import { testModel } from "../helpers/models.js";

/**
 * llama.cpp's repeat_penalty on the real engine. A +100 logit_bias makes one token the greedy choice at every
 * step (see logit-bias.test.ts); the penalty, applied after the bias as in llama.cpp, divides that logit for
 * each token in its window, so where the token may come back shows the window.
 */
describe("repeat_penalty on the embedded engine", () => {
  test("the window: the answer only, the last token, the prompt too", async (t) => {
    const llama = await llamaRuntime(createLogger("silent"));
    const vocab = await llama.loadModel({ modelPath: testModel(), vocabOnly: true });
    t.after(() => vocab.dispose());
    const [cat] = vocab.tokenize("cat", false, "trimLeadingSpace");
    assert.ok(cat !== undefined);
    const piece = vocab.detokenize([cat]);

    const engine = await embeddedEngine(t, { parallel: 1 });
    const run = async (prompt: string, repeatPenalty: Sampling["repeatPenalty"]) => {
      const pieces: string[] = [];
      for await (const ev of engine.generate({
        ...(await greedyOptions(engine, prompt, 6)),
        logitBias: new Map([[cat, 100]]),
        repeatPenalty,
      })) {
        if (ev.type === "text") pieces.push(ev.text);
      }
      return pieces.filter((p) => p === piece).length; // how often the biased token came
    };
    const penalty = (p: number, lastN: number) => ({ penalty: p, lastN, field: "repeat_penalty" as const });

    assert.equal(await run("Name an animal.", null), 6, "without a penalty, the biased token every time");
    assert.equal(await run("Name an animal.", penalty(1, 64)), 6, "a penalty of 1 changes nothing");
    assert.equal(await run("Name an animal.", penalty(1000, 64)), 1, "once in the window, never again");
    assert.equal(await run("Name an animal.", penalty(1000, 1)), 3, "back as soon as it leaves a window of one");
    const inPrompt = `${piece}. Name another animal.`;
    const promptTokens = await encodeAll(engine, [{ role: "user", content: inPrompt }]);
    assert.ok(promptTokens.includes(cat), "the prompt holds the token");
    assert.equal(await run(inPrompt, penalty(1000, 64)), 0, "the window reaches into the prompt");
    assert.equal(await run(inPrompt, penalty(1000, -1)), 0, "-1: the whole context");
  });
});
