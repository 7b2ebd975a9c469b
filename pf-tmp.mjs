import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { loadThreadPool } from "/work/main/dist/src/engines/llama/thread-pool.js";
loadThreadPool();
const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: "/work/main/data/bench/bench.gguf" });
const bs = +(process.argv[2] ?? 136);
const ctx = await model.createContext({ contextSize: 3072, sequences: 8, threads: 2, batchSize: bs, flashAttention: process.env.FA !== "0" });
const seq = ctx.getSequence();
const toks = Array.from({ length: 2048 }, (_, i) => 100 + ((i * 7919) % 30000));
for (const chunk of [128]) {
  const t0 = performance.now(); const times = [];
  for (let at = 0; at < 2047; at += chunk) { const t = performance.now(); await seq.evaluateWithoutGeneratingNewTokens(toks.slice(at, Math.min(at + chunk, 2047))); times.push(Math.round(performance.now() - t)); }
  console.log(`bs ${bs} chunk ${chunk}: ${(performance.now() - t0).toFixed(0)} ms`, times.join(" "));
  await seq.clearHistory();
}
