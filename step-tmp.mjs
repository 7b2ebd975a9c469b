import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { loadThreadPool } from "/work/main/dist/src/engines/llama/thread-pool.js";
loadThreadPool();
const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: "/work/main/data/bench/bench.gguf" });
const ctx = await model.createContext({ contextSize: 3072, sequences: 9, threads: 2, batchSize: 512, flashAttention: true });
const seqs = Array.from({ length: 9 }, () => ctx.getSequence());
const rnd = (n, s) => Array.from({ length: n }, (_, i) => 100 + ((i * 7919 + s * 104729) % 30000));
// fill each generator with 128 tokens of context
for (let i = 0; i < 8; i++) await seqs[i].evaluateWithoutGeneratingNewTokens(rnd(128, i));
const med = (a) => a.sort((x, y) => x - y)[a.length >> 1];
async function step(G, B) {
  const ps = [];
  for (let i = 0; i < G; i++) ps.push(seqs[i].evaluateWithoutGeneratingNewTokens(rnd(1, 1000 + i + seqs[i].nextTokenIndex)));
  if (B > 0) ps.push(seqs[8].evaluateWithoutGeneratingNewTokens(rnd(B, 77 + seqs[8].nextTokenIndex)));
  const t = performance.now(); await Promise.all(ps); return performance.now() - t;
}
for (const G of [1, 2, 4, 8]) {
  const row = [];
  for (const B of [0, 1, 4, 8, 16, 32, 64]) {
    const ts = [];
    for (let r = 0; r < 7; r++) { ts.push(await step(G, B)); }
    row.push(`B${B}=${med(ts).toFixed(1)}`);
    await seqs[8].clearHistory();
    for (let i = 0; i < G; i++) await seqs[i].eraseContextTokenRanges([{ start: 128, end: seqs[i].nextTokenIndex }]);
  }
  console.log(`G=${G}`, row.join(" "));
}
for (const B of [8, 16, 32, 64, 128, 256, 512]) { const ts = []; for (let r = 0; r < 3; r++) { ts.push(await step(0, B)); await seqs[8].clearHistory(); } console.log(`prompt only B=${B}: ${med(ts).toFixed(1)} ms`); }
