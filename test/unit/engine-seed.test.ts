import assert from "node:assert/strict";
import { test } from "node:test";
import type { LlamaEngine } from "../../src/engines/llama/llama-engine.js";
import { embeddedEngine, greedyOptions } from "../helpers/engine.js";

// Sampling seeds on the real engine: random answers differ without a seed and repeat with one.

async function sample(e: LlamaEngine, seed: number | null): Promise<string> {
  const opts = { ...(await greedyOptions(e, "Tell me something.", 24)), temperature: 1, topK: 0, topP: 1, seed };
  let text = "";
  for await (const ev of e.generate(opts)) if (ev.type === "text") text += ev.text;
  return text;
}

test("requests without a seed sample with fresh random seeds: four at once do not all answer alike", async (t) => {
  const e = await embeddedEngine(t, { parallel: 4, threads: 1, context_size: 512 });
  const answers = await Promise.all([sample(e, null), sample(e, null), sample(e, null), sample(e, null)]);
  assert.ok(answers.every((a) => a.length > 0));
  assert.ok(new Set(answers).size > 1, `four answers at temperature 1: ${JSON.stringify(answers)}`);
});

test("a request with a seed is repeatable", async (t) => {
  const e = await embeddedEngine(t, { parallel: 2, threads: 1, context_size: 512 });
  const [a, b] = await Promise.all([sample(e, 1234), sample(e, 1234)]);
  assert.equal(a, b);
  assert.equal(await sample(e, 1234), a);
});
