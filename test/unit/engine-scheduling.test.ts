import assert from "node:assert/strict";
import { describe, test, type TestContext } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import type { ModelConfig } from "../../src/config/schema.js";
import { contextBatchSize, engineBatchSizes, type LlamaEngine } from "../../src/engines/llama/llama-engine.js";
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
      else tokens = ev.completionTokens;
    }
    return tokens;
  })();
}

describe("decode steps of the real engine", () => {
  test("the context's batch has room for a step's prompt tokens and every sequence, in a multiple of 32", () => {
    assert.deepEqual(engineBatchSizes({ batch_size: 0, streaming_batch_size: 0 }, false), { prompt: 128, streaming: 16 });
    assert.deepEqual(engineBatchSizes({ batch_size: 0, streaming_batch_size: 0 }, true), { prompt: 512, streaming: 512 });
    assert.deepEqual(engineBatchSizes({ batch_size: 8, streaming_batch_size: 64 }, false), { prompt: 8, streaming: 8 });
    assert.equal(contextBatchSize(128, 8), 160);
    assert.equal(contextBatchSize(24, 8), 32);
  });

  test("requests that arrive together start streaming in the same step, however their prompts' lengths differ", async (t) => {
    const e = await engine(t, { parallel: 2, batch_size: 16, streaming_batch_size: 4 });
    const order: string[] = [];
    const long = run(e, "long", await longMessage(e, 300, "A long question about the sea."), 8, order);
    await nextTurn(); // the long prompt's first step is under way
    const short = run(e, "short", "Hi.", 8, order);
    assert.deepEqual(await Promise.all([long, short]), [8, 8]);
    // The short prompt is in long before the long one; its sequence waits, and both first tokens come from one step.
    const firstTwo = order.slice(0, 2).sort();
    assert.deepEqual(firstTwo, ["long", "short"], `token order: ${order.join(" ")}`);
  });

  test("a prompt that arrives while another sequence streams goes in small chunks, one beside each of the stream's tokens", async (t) => {
    const e = await engine(t, { parallel: 2, batch_size: 64, streaming_batch_size: 4 });
    const order: string[] = [];
    const streaming = run(e, "stream", "Tell me a long story.", 120, order);
    while (order.length < 3) await nextTurn(); // streaming now
    const content = await longMessage(e, 100, "Another question, please.");
    const promptTokens = (await encodeAll(e, [{ role: "user", content }])).length;
    const late = run(e, "late", content, 4, order);
    assert.deepEqual(await Promise.all([streaming, late]), [120, 4]);
    const start = 3;
    const lateFirst = order.indexOf("late");
    const streamTokensMeanwhile = order.slice(start, lateFirst).filter((n) => n === "stream").length;
    // About promptTokens / 4 steps of 4 prompt tokens, each with one of the stream's tokens. In 64-token steps, the
    // stream would get about 2; with the prompt apart from the stream's steps, it would get none.
    const steps = Math.ceil((promptTokens - 1) / 4);
    assert.ok(streamTokensMeanwhile >= steps - 3, `${streamTokensMeanwhile} stream tokens during ${steps} prompt steps (${promptTokens} tokens)`);
  });
});
