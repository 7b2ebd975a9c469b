import { Command, InvalidArgumentError } from "commander";
import { existsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_MODEL } from "../src/config/defaults.js";
import type { ModelConfig } from "../src/config/schema.js";
import { makeModel, type ModelSize } from "../src/gguf/model-maker.js";
import { fuzzBurst } from "./fuzz.js";
import { measureFailover } from "./failover.js";
import { measureGateway } from "./gateway.js";
import { loadInProcess } from "./inproc.js";
import { runLoad, type LoadResult } from "./load.js";
import { describeMachine } from "./machine.js";
import { exactPrompt, serverCounter } from "./prompts.js";
import { buildReport, writeResults, type BenchResults, type InProcessResult } from "./report.js";
import { concurrency, medians, singleStream, TEMPERATURE, type ConcurrencyResult } from "./scenarios.js";
import { api, procMemory, rssMb, startServer, type BenchServer } from "./server.js";
import { summarise, streamChat, type GenerationSummary } from "./sse-client.js";
import { median, round, sleep } from "./stats.js";

const repoRoot = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) dir = dirname(dir);
  return dir;
})();
const cliPath = join(repoRoot, "dist", "src", "cli", "main.js");

interface Options {
  quick: boolean;
  out: string;
  threads: number;
  batchSize?: number;
  runs?: number;
  http: boolean;
  inproc: boolean;
  load: boolean;
  count: boolean;
  concurrency: boolean;
  gateway: boolean;
  failover: boolean;
  readme?: boolean;
}

/** How much of each measurement a run does: the full run stays under ~8 minutes on 2 cores. */
function plan(o: Options) {
  const runs = o.runs ?? (o.quick ? 1 : 3);
  return {
    runs,
    maxTokens: o.quick ? 32 : 128,
    secondTurnTokens: 8,
    concurrencyLevels: [1, 2, 4, 8],
    concurrencyPromptTokens: 128,
    concurrencyTokens: o.quick ? 32 : 64,
    loadSeconds: o.quick ? 2 : 5,
    countRuns: o.quick ? 3 : 7,
    fuzzRequests: o.quick ? 18 : 45,
    // Under a minute in full (most of it the 64-stream rounds; 55 s on 2 busy cores), about 30 s quick.
    gateway: {
      requests: o.quick ? 100 : 300, block: 25, rounds64: o.quick ? 2 : 4, perClient: o.quick ? 3 : 5,
      streamTokens: 256, streamRuns: o.quick ? 3 : 7, streamRuns64: o.quick ? 1 : 2,
    },
    // One frozen replica: about 15 s whatever the mode (the time measured is the gateway's bounds).
    failoverRequests: 8,
  };
}

const say = (text: string) => process.stderr.write(`[bench] ${text}\n`);

function ensureModel(size: ModelSize): { path: string; bytes: number } {
  const path = join(repoRoot, "data", "bench", `${size}.gguf`);
  if (!existsSync(path)) {
    say(`making the ${size} model at ${path}`);
    makeModel({ size, out: path });
  }
  return { path, bytes: statSync(path).size };
}

function benchModelConfig(source: string, threads: number, batchSize?: number): ModelConfig {
  // 2,048 prompt tokens + an answer + a second turn fit in 3,072 per sequence, for each of 8 sequences.
  return {
    ...DEFAULT_MODEL, id: "bench", name: "Bench model", source, context_size: 3072, parallel: 8, queue_size: 64, threads,
    ...(batchSize !== undefined ? { batch_size: batchSize } : {}),
  };
}

/** What the engine's "model loaded" line says about how it runs (not the log's own pid, time, level). */
function loadedFields(entry: Record<string, unknown>): Record<string, unknown> {
  const { contextSize, sequences, threads, chatTemplate, ms } = entry;
  return { contextSize, sequences, threads, chatTemplate, load_ms: ms };
}

async function warmUp(server: BenchServer): Promise<void> {
  await streamChat(
    { url: server.url, key: server.key, model: server.model },
    { messages: [{ role: "user", content: "Warm up: say something." }], max_tokens: 8, temperature: TEMPERATURE },
  );
}

async function httpPhase(o: Options, p: ReturnType<typeof plan>, bench: { path: string }, results: BenchResults) {
  say("starting the server on the bench model");
  const server = await startServer({ cliPath, model: benchModelConfig(bench.path, o.threads, o.batchSize) });
  results.server = { loaded: loadedFields(server.loaded) };
  try {
    await sleep(500);
    results.rss.idle_mb = await rssMb(server);
    results.rss.idle_detail = procMemory(server.pid);
    await warmUp(server);

    say(`single stream, 512-token prompts, ${p.runs} run(s)`);
    const s512 = await singleStream(server, { promptTokens: 512, runs: p.runs, maxTokens: p.maxTokens });
    say(`single stream, 2048-token prompts with second turns, ${p.runs} run(s)`);
    const s2k = await singleStream(server, { promptTokens: 2048, runs: p.runs, maxTokens: p.maxTokens, secondTurn: { maxTokens: p.secondTurnTokens } });
    results.http = { single512: s512.single, single2k: s2k.single };
    results.prefix = s2k.prefix;

    if (o.concurrency) {
      const levels: ConcurrencyResult[] = [];
      for (const streams of p.concurrencyLevels) {
        say(`${streams} concurrent stream(s), ${p.runs} run(s)`);
        levels.push(await concurrency(server, {
          streams, promptTokens: p.concurrencyPromptTokens, maxTokens: p.concurrencyTokens, runs: p.runs, pollRss: streams === 8,
        }));
      }
      results.concurrency = levels;
      results.rss.under_load_max_mb = levels.find((l) => l.streams === 8)?.rss_max_mb ?? null;
    }

    if (o.load) {
      const loads: LoadResult[] = [];
      for (const route of ["GET /v1/models", "POST /v1/tokens/count"] as const) {
        await runLoad(server, { route, connections: 64, durationS: 1 }); // warm-up, not recorded
        for (const connections of [1, 64]) {
          say(`autocannon ${route}, ${connections} connection(s), ${p.loadSeconds} s`);
          loads.push(await runLoad(server, { route, connections, durationS: p.loadSeconds }));
        }
      }
      results.load = loads;
    }
    results.server.warnings = server.warnings();
  } finally {
    await server.stop();
  }
}

/** Counting cost is the tokenizer and the template, not the weights: a tiny model with a 110k context. */
async function countPhase(p: ReturnType<typeof plan>, tiny: { path: string }, results: BenchResults) {
  say("starting a server on the tiny model (110,000-token context) to count a 100,000-token prompt");
  const server = await startServer({
    cliPath,
    model: { id: "tiny", source: tiny.path, context_size: 110_000, parallel: 1, max_input_tokens: 100_000 },
  });
  try {
    const prompt = await exactPrompt(serverCounter(server, 1), 100_000, "Conversation count.", 77);
    const body = { model: server.model, messages: prompt.messages, max_tokens: 1 };
    const times: number[] = [];
    for (let i = 0; i < p.countRuns + 1; i++) {
      const t0 = performance.now();
      const res = await api<{ usage: { prompt_tokens: number } }>(server, "/v1/tokens/count", body);
      if (i > 0) times.push(performance.now() - t0); // the first is a warm-up
      if (res.usage.prompt_tokens !== 100_000) throw new Error(`counted ${res.usage.prompt_tokens}`);
    }
    results.count100k = {
      model: "tiny (made model, 2,048-token vocabulary)",
      prompt_tokens: prompt.tokens,
      body_bytes: Buffer.byteLength(JSON.stringify(body)),
      runs_ms: times.map((t) => round(t)),
      median_ms: round(median(times)),
    };
    say(`a burst of ${p.fuzzRequests} hostile bodies (prompts of 3.9 MB, a conversation to trim, malformed JSON) beside a stream`);
    results.fuzz = await fuzzBurst(server, { requests: p.fuzzRequests, parallel: 4, seed: 12 });
  } finally {
    await server.stop();
  }
}

async function inProcessPhase(o: Options, p: ReturnType<typeof plan>, bench: { path: string }, results: BenchResults) {
  if (!results.http) return;
  say("loading the same engine in-process (the server is stopped)");
  const engine = await loadInProcess(benchModelConfig(bench.path, o.threads, o.batchSize));
  const out: InProcessResult = { loaded: loadedFields(engine.loaded) };
  try {
    await engine.generate(await engine.encode([{ role: "user", content: "Warm up: say something." }]), 8, TEMPERATURE);
    for (const key of ["single512", "single2k"] as const) {
      const http = results.http[key];
      say(`in-process, ${http.prompt_tokens}-token prompts, ${http.prompts.length} run(s)`);
      const runs: GenerationSummary[] = [];
      for (const prompt of http.prompts) {
        const tokens = await engine.encode(prompt.messages);
        if (tokens.length !== http.prompt_tokens) throw new Error(`in-process prompt is ${tokens.length} tokens, HTTP's ${http.prompt_tokens}`);
        runs.push(summarise(await engine.generate(tokens, p.maxTokens, TEMPERATURE)));
      }
      out[key] = { prompt_tokens: http.prompt_tokens, runs, median: medians(runs) };
    }
  } finally {
    await engine.close();
  }
  results.inproc = out;
}

async function main(o: Options): Promise<void> {
  const began = performance.now();
  const p = plan(o);
  const bench = ensureModel("bench");
  const tiny = ensureModel("tiny");
  const results: BenchResults = {
    mode: o.quick ? "quick" : "full",
    machine: describeMachine(repoRoot),
    settings: { ...p, threads: o.threads, temperature: TEMPERATURE, prompt_lengths: [512, 2048] },
    model: { file: "data/bench/bench.gguf", bytes: bench.bytes, mb: round(bench.bytes / 2 ** 20, 1) },
    rss: { idle_mb: null, idle_detail: null, under_load_max_mb: null },
    server: null, http: null, prefix: null, concurrency: null, load: null, count100k: null, fuzz: null, inproc: null, gateway: null, failover: null, duration_s: 0,
  };
  if (o.http) await httpPhase(o, p, bench, results);
  if (o.count) await countPhase(p, tiny, results);
  if (o.gateway) results.gateway = await measureGateway({ cliPath, modelPath: tiny.path, plan: p.gateway, say });
  if (o.failover) results.failover = await measureFailover({ cliPath, modelPath: tiny.path, requests: p.failoverRequests, say });
  if (o.inproc) await inProcessPhase(o, p, bench, results);
  results.duration_s = round((performance.now() - began) / 1000, 1);

  const report = buildReport(results);
  process.stdout.write(`${report}\n`);
  const written = writeResults(results, report, {
    outDir: resolve(o.out),
    readme: (o.readme ?? !o.quick) ? join(repoRoot, "README.md") : null,
    latest: !o.quick,
  });
  for (const f of written) say(`wrote ${f}`);
  say(`done in ${results.duration_s} s`);
}

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("expected a whole number");
  return n;
};

const program = new Command("bench")
  .description("Lucena One benchmark: decode speed, time to first token, concurrency, prefix reuse, API load, RSS, gateway overhead")
  .option("--quick", "fewer runs and shorter generations: a smoke check in about a minute", false)
  .option("--out <dir>", "where the JSON results go", join(repoRoot, "bench", "results"))
  .option("--threads <n>", "engine threads, passed to the model config (0: the server's default)", int, 0)
  .option("--runs <n>", "runs per measurement (default 3, quick 1)", int)
  .option("--batch-size <n>", "the model's batch_size (default: the server's default)", int)
  .option("--skip-http", "skip the bench-model server (single streams, concurrency, load; and so the in-process comparison)")
  .option("--skip-inproc", "skip the in-process engine comparison")
  .option("--skip-load", "skip the autocannon load tests")
  .option("--skip-count", "skip counting a 100,000-token prompt and the burst of hostile bodies")
  .option("--skip-concurrency", "skip the concurrent-stream tests")
  .option("--skip-gateway", "skip the gateway's added latency (a gateway in front of a tiny-model worker)")
  .option("--skip-failover", "skip the time a request on a frozen replica takes to be answered by another")
  .option("--readme", "write the table into README.md (default: full runs only)")
  .option("--no-readme", "leave README.md alone")
  .addHelpText("after", "\nFull runs write <date>.json and latest.json and update README.md; quick runs write <date>-quick.json only." +
    "\nThe gateway phases alone: --quick --skip-http --skip-count --no-readme (add --skip-gateway for the failover one only).");

program.parse();
const raw = program.opts<{ quick: boolean; out: string; threads: number; batchSize?: number; runs?: number; skipHttp?: boolean; skipInproc?: boolean; skipLoad?: boolean; skipCount?: boolean; skipConcurrency?: boolean; skipGateway?: boolean; skipFailover?: boolean; readme?: boolean }>();
main({
  quick: raw.quick, out: raw.out, threads: raw.threads, ...(raw.batchSize ? { batchSize: raw.batchSize } : {}), ...(raw.runs !== undefined ? { runs: Math.max(1, raw.runs) } : {}),
  http: !raw.skipHttp, inproc: !raw.skipInproc, load: !raw.skipLoad, count: !raw.skipCount, concurrency: !raw.skipConcurrency,
  gateway: !raw.skipGateway, failover: !raw.skipFailover,
  ...(raw.readme !== undefined ? { readme: raw.readme } : {}),
}).catch((err: unknown) => {
  process.stderr.write(`[bench] failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
