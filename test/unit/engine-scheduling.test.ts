import assert from "node:assert/strict";
import { describe, test, type TestContext } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import type { ModelConfig } from "../../src/config/schema.js";
import { contextBatchSize, engineStepOptions, type LlamaEngine } from "../../src/engines/llama/llama-engine.js";
import { embeddedEngine, encodeAll, greedyOptions } from "../helpers/engine.js";

// What each decode step holds (step-gate.ts), seen from outside the real engine: the order in which the tokens of
// concurrent generations come out.

function engine(t: TestContext, config: Partial<ModelConfig>): Promise<LlamaEngine> {
  return embeddedEngine(t, { threads: 1, context_size: 1024, ...config });
}

/** A user message that the tiny model's template and tokenizer turn into at least `tokens` prompt tokens. */
async function longMessage(e: LlamaEngine, tokens: number, seed: string): Promise<string> {
  let content = seed;
  while ((await encodeAll(e, [{ role: "user", content }])).length < tokens) content += ` ${seed} ${content.length}`;
  return content;
}

/** Starts a greedy generation; each text event is logged as `name` in `order`. */
function run(e: LlamaEngine, name: string, content: string, maxTokens: number, order: string[]): Promise<number> {
  return (async () => {
    const events = e.generate(await greedyOptions(e, content, maxTokens));
    let tokens = 0;
    for await (const ev of events) {
      if (ev.type === "text") order.push(name);
      else if (ev.type === "done") tokens = ev.completionTokens;
    }
    return tokens;
  })();
}

describe("decode steps of the real engine", () => {
  test("defaults: 256 prompt tokens a step on a CPU and a 250 ms target; the context's batch has room for them and every sequence", () => {
    assert.deepEqual(engineStepOptions({ batch_size: 0, tpot_target_ms: 0 }, false), {
      promptTokens: 256,
      targetStepMs: 250,
      minPromptTokens: 32,
    });
    assert.deepEqual(engineStepOptions({ batch_size: 0, tpot_target_ms: 0 }, true), {
      promptTokens: 512,
      targetStepMs: 50,
      minPromptTokens: 32,
    });
    assert.deepEqual(engineStepOptions({ batch_size: 8, tpot_target_ms: 400 }, false), {
      promptTokens: 8,
      targetStepMs: 400,
      minPromptTokens: 8,
    });
    assert.equal(contextBatchSize(128, 8), 160);
    assert.equal(contextBatchSize(24, 8), 32);
  });

  test("a prompt's last chunk gives the first token in its own step: no step for the last token alone", async (t) => {
    const e = await engine(t, { parallel: 1, batch_size: 64 });
    const order: string[] = [];
    const content = await longMessage(e, 100, "A question in two chunks.");
    const promptTokens = (await encodeAll(e, [{ role: "user", content }])).length;
    assert.ok(promptTokens > 64 && promptTokens <= 128, `${promptTokens} prompt tokens`);
    assert.equal(await run(e, "only", content, 3, order), 3);
    // Two prompt steps (64, then the rest with the last token, whose logits give the first token), then one step
    // for each of the two other tokens.
    assert.equal(e.stats().scheduler!.steps, 4);
  });

  test("requests that arrive together are served first come first served: the first streams once its prompt is in", async (t) => {
    const e = await engine(t, { parallel: 2, batch_size: 16 });
    const order: string[] = [];
    const first = run(e, "first", "Hi.", 8, order);
    const second = run(e, "second", await longMessage(e, 300, "A long question about the sea."), 8, order);
    assert.deepEqual(await Promise.all([first, second]), [8, 8]);
    // The short prompt is in after a step; its sequence streams while the long one's prompt goes in beside it.
    assert.deepEqual(order.slice(0, 2), ["first", "first"], `token order: ${order.join(" ")}`);
  });

  test("a prompt that arrives while another sequence streams gets its first token within the steps the measured budget needs", async (t) => {
    const e = await engine(t, { parallel: 2, batch_size: 64 });
    const order: string[] = [];
    const streaming = run(e, "stream", "Tell me a long story.", 120, order);
    while (order.length < 3) await nextTurn(); // streaming now
    const content = await longMessage(e, 300, "Another question, please.");
    const promptTokens = (await encodeAll(e, [{ role: "user", content }])).length;
    const late = run(e, "late", content, 4, order);
    assert.deepEqual(await Promise.all([streaming, late]), [120, 4]);
    const lateFirst = order.indexOf("late");
    const streamTokensMeanwhile = order.slice(3, lateFirst).filter((n) => n === "stream").length;
    // Beside the stream, each step holds what the measured prompt speed fits in 250 ms: for the tiny model the whole
    // step (64), on a loaded machine less, never under the floor of 32. A fixed 16-token chunk would take 19 steps.
    const s = e.stats().scheduler!;
    assert.ok(
      s.promptTokenMs !== null && s.promptBudget !== null && s.promptBudget >= 32,
      `measured ${s.promptTokenMs} ms a prompt token, budget ${s.promptBudget}`,
    );
    const steps = Math.ceil((promptTokens - 1) / 32);
    assert.ok(
      streamTokensMeanwhile <= steps + 3,
      `${streamTokensMeanwhile} stream tokens before the first of a ${promptTokens}-token prompt (at most ${steps} steps)`,
    );
    assert.ok(streamTokensMeanwhile >= 1, "the stream went on beside the prompt");
  });
});
