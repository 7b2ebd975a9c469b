import { Command, InvalidArgumentError } from "commander";
import { existsSync, statSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_MODEL } from "../src/config/defaults.js";
import type { ModelConfig } from "../src/config/schema.js";
import { makeModel, type ModelSize } from "../src/gguf/model-maker.js";
import { measureContention } from "./contention.js";
import { measureGrammarCost } from "./grammar.js";
import { fuzzBurst } from "./fuzz.js";
import { measureFailover } from "./failover.js";
import { measureGateway } from "./gateway.js";
import { loadInProcess } from "./inproc.js";
import {
  CMAKE_FLAGS,
  ensureReference,
  loadedCpuVariant,
  runLlamaBench,
  startLlamaServer,
  type ReferenceBuild,
} from "./llama-reference.js";
import { runLoad, type LoadResult } from "./load.js";
import { describeMachine } from "./machine.js";
import { exactPrompt, serverCounter } from "./prompts.js";
import { servingPlotSvg } from "./plot.js";
import {
  buildReport,
  SERVER_NAMES,
  writeResults,
  type BenchResults,
  type InProcessResult,
  type ReferenceResult,
} from "./report.js";
import {
  concurrency,
  medians,
  replayConcurrency,
  replaySingle,
  singleStream,
  TEMPERATURE,
  type ConcurrencyResult,
} from "./scenarios.js";
import { buildWorkloads, SERVING_SHAPE, SLO, sweep, type RateWorkload } from "./serving.js";
import { api, procMemory, rssMb, startServer, type BenchServer } from "./server.js";
import { summarise, streamChat, type ChatTarget, type GenerationSummary } from "./sse-client.js";
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
  tpotTargetMs?: number;
  runs?: number;
  http: boolean;
  inproc: boolean;
  load: boolean;
  count: boolean;
  concurrency: boolean;
  gateway: boolean;
  failover: boolean;
  contention: boolean;
  grammar: boolean;
  serving: boolean;
  reference: boolean;
  servingRates?: number[];
  servingRequests?: number;
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
      requests: o.quick ? 100 : 300,
      block: 25,
      rounds64: o.quick ? 2 : 4,
      perClient: o.quick ? 3 : 5,
      streamTokens: 256,
      streamRuns: o.quick ? 3 : 7,
      streamRuns64: o.quick ? 1 : 2,
    },
    // One frozen replica: about 15 s whatever the mode (the time measured is the gateway's bounds).
    failoverRequests: 8,
    // The open-loop sweep: the same requests at each rate, to each server. On 2 AVX2 cores (prompts cost ~9 ms a
    // token there) the servers saturate at about 0.2–0.4 req/s with these lengths: rates from under that to well
    // over it. About 4 minutes a server in full, 1 quick; a rate under capacity takes requests ÷ rate seconds.
    serving: {
      rates: o.servingRates ?? (o.quick ? [0.25, 1] : [0.125, 0.25, 0.5, 1]),
      requests: o.servingRequests ?? (o.quick ? 6 : 10),
      seed: 13,
      shape: SERVING_SHAPE,
      slo: SLO,
      timeoutS: 600,
    },
    llamaBenchRepetitions: o.quick ? 1 : 3,
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

function benchModelConfig(source: string, threads: number, batchSize?: number, tpotTargetMs?: number): ModelConfig {
  // 2,048 prompt tokens + an answer + a second turn fit in 3,072 per sequence, for each of 8 sequences.
  return {
    ...DEFAULT_MODEL,
    id: "bench",
    name: "Bench model",
    source,
    context_size: 3072,
    parallel: 8,
    queue_size: 64,
    threads,
    ...(batchSize !== undefined ? { batch_size: batchSize } : {}),
    ...(tpotTargetMs !== undefined ? { tpot_target_ms: tpotTargetMs } : {}),
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
  const server = await startServer({
    cliPath,
    model: benchModelConfig(bench.path, o.threads, o.batchSize, o.tpotTargetMs),
  });
  results.server = { loaded: loadedFields(server.loaded) };
  try {
    await sleep(500);
    results.rss.idle_mb = await rssMb(server);
    results.rss.idle_detail = procMemory(server.pid);
    await warmUp(server);

    say(`single stream, 512-token prompts, ${p.runs} run(s)`);
    const s512 = await singleStream(server, { promptTokens: 512, runs: p.runs, maxTokens: p.maxTokens });
    say(`single stream, 2048-token prompts with second turns, ${p.runs} run(s)`);
    const s2k = await singleStream(server, {
      promptTokens: 2048,
      runs: p.runs,
      maxTokens: p.maxTokens,
      secondTurn: { maxTokens: p.secondTurnTokens },
    });
    results.http = { single512: s512.single, single2k: s2k.single };
    results.prefix = s2k.prefix;

    if (o.concurrency) {
      const levels: ConcurrencyResult[] = [];
      for (const streams of p.concurrencyLevels) {
        say(`${streams} concurrent stream(s), ${p.runs} run(s)`);
        levels.push(
          await concurrency(server, {
            streams,
            promptTokens: p.concurrencyPromptTokens,
            maxTokens: p.concurrencyTokens,
            runs: p.runs,
            pollRss: streams === 8,
          }),
        );
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
    say(
      `a burst of ${p.fuzzRequests} hostile bodies (prompts of 3.9 MB, a conversation to trim, malformed JSON) beside a stream`,
    );
    results.fuzz = await fuzzBurst(server, { requests: p.fuzzRequests, parallel: 4, seed: 12 });
  } finally {
    await server.stop();
  }
}

async function inProcessPhase(o: Options, p: ReturnType<typeof plan>, bench: { path: string }, results: BenchResults) {
  if (!results.http) return;
  say("loading the same engine in-process (the server is stopped)");
  const engine = await loadInProcess(benchModelConfig(bench.path, o.threads, o.batchSize, o.tpotTargetMs));
  const out: InProcessResult = { loaded: loadedFields(engine.loaded) };
  try {
    await engine.generate(await engine.encode([{ role: "user", content: "Warm up: say something." }]), 8, TEMPERATURE);
    for (const key of ["single512", "single2k"] as const) {
      const http = results.http[key];
      say(`in-process, ${http.prompt_tokens}-token prompts, ${http.prompts.length} run(s)`);
      const runs: GenerationSummary[] = [];
      for (const prompt of http.prompts) {
        const tokens = await engine.encode(prompt.messages);
        if (tokens.length !== http.prompt_tokens)
          throw new Error(`in-process prompt is ${tokens.length} tokens, HTTP's ${http.prompt_tokens}`);
        runs.push(summarise(await engine.generate(tokens, p.maxTokens, TEMPERATURE)));
      }
      out[key] = { prompt_tokens: http.prompt_tokens, runs, median: medians(runs) };
    }
  } finally {
    await engine.close();
  }
  results.inproc = out;
}

/** Threads the project's engine ran with (its "model loaded" line), for llama.cpp's tools to use as many. */
let engineThreadsUsed = 0;

async function servingPhase(
  o: Options,
  p: ReturnType<typeof plan>,
  bench: { path: string },
  results: BenchResults,
): Promise<RateWorkload[]> {
  say("starting the server on the bench model for the open-loop serving sweep");
  const server = await startServer({
    cliPath,
    model: benchModelConfig(bench.path, o.threads, o.batchSize, o.tpotTargetMs),
  });
  try {
    engineThreadsUsed = Number(server.loaded.threads) || engineThreadsUsed;
    results.server ??= { loaded: loadedFields(server.loaded) };
    await warmUp(server);
    const s = p.serving;
    say(`writing ${s.requests} prompts for each of ${s.rates.length} rates, exact to the token`);
    const workloads = await buildWorkloads(serverCounter(server, s.shape.outputTokens[1]), {
      rates: s.rates,
      requests: s.requests,
      seed: s.seed,
      shape: s.shape,
    });
    const runs = await sweep(
      SERVER_NAMES.lucena,
      { url: server.url, key: server.key, model: server.model },
      workloads,
      {
        temperature: TEMPERATURE,
        timeoutMs: s.timeoutS * 1000,
        say,
      },
    );
    results.serving = {
      settings: {
        rates: s.rates,
        requests_per_rate: s.requests,
        seed: s.seed,
        prompt_tokens: s.shape.promptTokens,
        output_tokens: s.shape.outputTokens,
        slo: s.slo,
        temperature: TEMPERATURE,
        ignore_eos: true,
        timeout_s: s.timeoutS,
      },
      runs,
      cpu_variants: { [SERVER_NAMES.lucena]: loadedCpuVariant(server.pid) },
      prompt_check: null,
      plot: null,
    };
    return workloads;
  } finally {
    await server.stop();
  }
}

/**
 * llama.cpp's own tools in the same run: llama-bench (no server running), then llama-server on the same model
 * file with the same threads, sequences and context, sent the very conversations the project's server was sent.
 */
async function referencePhase(
  p: ReturnType<typeof plan>,
  bench: { path: string },
  build: ReferenceBuild,
  workloads: RateWorkload[],
  results: BenchResults,
): Promise<void> {
  const threads = engineThreadsUsed || Number(results.server?.loaded.threads) || availableParallelism();
  const ref: ReferenceResult = (results.reference ??= {});
  ref.build = {
    tag: build.tag,
    commit: build.commit,
    dir: build.dir,
    cmake_flags: CMAKE_FLAGS,
    prebuilt: build.prebuilt,
  };
  ref.threads = threads;
  say(`llama-bench: pp512, tg128 and tg128 at depth 512, ${threads} threads, ${p.llamaBenchRepetitions} repetition(s)`);
  try {
    ref.llama_bench = await runLlamaBench(build, { model: bench.path, threads, repetitions: p.llamaBenchRepetitions });
  } catch (err) {
    ref.llama_bench = null;
    say(`llama-bench failed: ${(err as Error).message}`);
  }
  say("starting llama.cpp's server on the bench model");
  const server = await startLlamaServer(build, { model: bench.path, parallel: 8, contextPerSequence: 3072, threads });
  try {
    ref.server = { args: server.args, cpu_variant: loadedCpuVariant(server.pid) };
    const to: ChatTarget = { url: server.url, key: "none", model: "bench" };
    // Both servers apply the GGUF's chat template: every prompt must be as long on llama.cpp's server.
    const prompts = [
      ...workloads.flatMap((w) => w.requests.map((r) => ({ messages: r.messages, tokens: r.prompt_tokens }))),
      ...(results.http?.single512.prompts ?? []),
      ...(results.concurrency ?? []).flatMap((l) => (l.prompts ?? []).flat()),
    ];
    const diffs: number[] = [];
    for (const q of prompts) diffs.push((await server.promptTokens(q.messages)) - q.tokens);
    const off = diffs.filter((d) => d !== 0);
    ref.prompt_check = { checked: diffs.length, mismatches: off.length, diffs: [...new Set(off)].slice(0, 5) };
    say(
      `prompt lengths on llama.cpp's server: ${diffs.length - off.length} of ${diffs.length} the same as counted by the project's server`,
    );
    await streamChat(to, {
      messages: [{ role: "user", content: "Warm up: say something." }],
      max_tokens: 8,
      temperature: TEMPERATURE,
    });

    if (results.http) {
      say(`llama.cpp's server: the single-stream ${results.http.single512.prompt_tokens}-token prompts again`);
      ref.single512 = await replaySingle(to, results.http.single512, p.maxTokens);
    }
    if (results.concurrency) {
      ref.concurrency = [];
      for (const level of results.concurrency) {
        say(`llama.cpp's server: ${level.streams} concurrent stream(s), the same prompts`);
        ref.concurrency.push(await replayConcurrency(to, level));
      }
    }
    if (results.serving && workloads.length) {
      const runs = await sweep(SERVER_NAMES.llama, to, workloads, {
        temperature: TEMPERATURE,
        timeoutMs: p.serving.timeoutS * 1000,
        say,
      });
      results.serving.runs.push(...runs);
      results.serving.cpu_variants[SERVER_NAMES.llama] = ref.server.cpu_variant;
      results.serving.prompt_check = ref.prompt_check;
    }
  } finally {
    await server.stop();
  }
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
    server: null,
    http: null,
    prefix: null,
    concurrency: null,
    load: null,
    count100k: null,
    fuzz: null,
    inproc: null,
    gateway: null,
    failover: null,
    contention: null,
    grammar: null,
    serving: null,
    reference: null,
    duration_s: 0,
  };
  // The reference is built before anything is measured: the first build keeps both cores busy for minutes.
  let reference: ReferenceBuild | null = null;
  if (o.reference && (o.serving || o.http)) {
    const outcome = await ensureReference({ repoRoot, say, jobs: availableParallelism() });
    if (outcome.ok) {
      reference = outcome.build;
      results.reference = { built_s: outcome.built_s };
    } else {
      say(`no llama.cpp column in this run: ${outcome.reason}`);
      results.reference = { skipped: outcome.reason };
    }
  }
  if (o.http) await httpPhase(o, p, bench, results);
  const workloads = o.serving ? await servingPhase(o, p, bench, results) : [];
  if (reference) {
    try {
      await referencePhase(p, bench, reference, workloads, results);
    } catch (err) {
      // The project's own figures stand without the reference; the report says what went wrong.
      const reason = `llama.cpp's server failed: ${err instanceof Error ? err.message : String(err)}`;
      say(reason);
      results.reference = { ...results.reference, skipped: reason };
    }
  }
  if (results.serving) {
    const stamp = results.machine.date.replace(/[:.]/g, "-");
    results.serving.plot = `${stamp}${o.quick ? "-quick" : ""}-serving.svg`;
  }
  if (o.count) await countPhase(p, tiny, results);
  if (o.gateway) results.gateway = await measureGateway({ cliPath, modelPath: tiny.path, plan: p.gateway, say });
  if (o.failover)
    results.failover = await measureFailover({ cliPath, modelPath: tiny.path, requests: p.failoverRequests, say });
  if (o.inproc) await inProcessPhase(o, p, bench, results);
  // The in-process single-stream measurements: the bench model on one sequence.
  const oneSequence = {
    ...benchModelConfig(bench.path, o.threads, o.batchSize, o.tpotTargetMs),
    context_size: 2048,
    parallel: 1,
  };
  if (o.contention) {
    say("one stream with and without a process busy on one core (the engine in this process)");
    results.contention = await measureContention({
      config: oneSequence,
      maxTokens: o.quick ? 64 : 256,
      rounds: o.quick ? 1 : 3,
      settleMs: 3000,
      timeLimitMs: 60_000,
      say,
    });
  }
  if (o.grammar) {
    say("one stream held to a JSON Schema against the same stream free (the engine in this process)");
    results.grammar = await measureGrammarCost({
      config: oneSequence,
      maxTokens: o.quick ? 64 : 256,
      rounds: o.quick ? 1 : 3,
      say,
    });
  }
  results.duration_s = round((performance.now() - began) / 1000, 1);

  const report = buildReport(results);
  process.stdout.write(`${report}\n`);
  const plot = results.serving ? await servingPlotSvg(results.serving.runs, plotSubtitle(results)) : null;
  const written = writeResults(results, report, {
    outDir: resolve(o.out),
    readme: (o.readme ?? !o.quick) ? join(repoRoot, "README.md") : null,
    latest: !o.quick,
    plot,
  });
  for (const f of written) say(`wrote ${f}`);
  say(`done in ${results.duration_s} s`);
}

function plotSubtitle(r: BenchResults): string[] {
  const s = r.serving!.settings;
  return [
    `${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.date.slice(0, 10)}; bench model (${r.model.mb} MiB Q8_0), 8 sequences, the same CPU backend`,
    `${s.requests_per_rate} requests per rate, prompts of ${s.prompt_tokens.join("–")} tokens, answers of ${s.output_tokens.join("–")}; ` +
      `goodput: TTFT ≤ ${s.slo.ttft_ms / 1000} s and TPOT ≤ ${s.slo.tpot_ms} ms`,
  ];
}

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("expected a whole number");
  return n;
};

const rateList = (v: string) => {
  const rates = v.split(",").map(Number);
  if (!rates.length || rates.some((r) => !Number.isFinite(r) || r <= 0))
    throw new InvalidArgumentError("expected request rates above 0, e.g. 0.5,1,2");
  return rates;
};

const program = new Command("bench")
  .description(
    "Lucena One benchmark: decode speed, time to first token, concurrency, prefix reuse, API load, RSS, gateway overhead",
  )
  .option("--quick", "fewer runs and shorter generations: a smoke check in about a minute", false)
  .option("--out <dir>", "where the JSON results go", join(repoRoot, "bench", "results"))
  .option("--threads <n>", "engine threads, passed to the model config (0: the server's default)", int, 0)
  .option("--runs <n>", "runs per measurement (default 3, quick 1)", int)
  .option("--tpot-target <ms>", "the model's tpot_target_ms (default: the server's default)", int)
  .option("--batch-size <n>", "the model's batch_size (default: the server's default)", int)
  .option(
    "--skip-http",
    "skip the bench-model server (single streams, concurrency, load; and so the in-process comparison)",
  )
  .option("--skip-inproc", "skip the in-process engine comparison")
  .option("--skip-load", "skip the autocannon load tests")
  .option("--skip-count", "skip counting a 100,000-token prompt and the burst of hostile bodies")
  .option("--skip-concurrency", "skip the concurrent-stream tests")
  .option("--skip-gateway", "skip the gateway's added latency (a gateway in front of a tiny-model worker)")
  .option("--skip-failover", "skip the time a request on a frozen replica takes to be answered by another")
  .option("--skip-contention", "skip one stream's decode speed with a process busy on one core")
  .option("--skip-grammar", "skip one stream's decode speed held to a JSON Schema against free")
  .option("--skip-serving", "skip the open-loop serving sweep (Poisson arrivals at several rates)")
  .option("--skip-reference", "no llama.cpp column: neither build nor run llama.cpp's server and llama-bench")
  .option(
    "--serving-only",
    "the serving sweep (and llama.cpp's, unless --skip-reference) and nothing else; with --quick, two short rates",
  )
  .option(
    "--serving-rates <list>",
    "the sweep's request rates, req/s, comma-separated (default 0.125,0.25,0.5,1; quick 0.25,1)",
    rateList,
  )
  .option("--serving-requests <n>", "requests per rate (default 10, quick 6)", int)
  .option("--readme", "write the table into README.md (default: full runs only)")
  .option("--no-readme", "leave README.md alone")
  .addHelpText(
    "after",
    "\nFull runs write <date>.json and latest.json and update README.md; quick runs write <date>-quick.json only." +
      "\nThe gateway phases alone: --quick --skip-http --skip-count --no-readme (add --skip-gateway for the failover one only)." +
      "\nllama.cpp's server and llama-bench are built once from node-llama-cpp's bundled source into ${XDG_CACHE_HOME:-~/.cache}/lucena-one/llama.cpp/" +
      "\n(about 10 minutes on 2 cores; cmake and a C++ compiler needed, else the column is left out).",
  );

// Ctrl-C or a timeout's SIGTERM: exit through process.exit, so the servers started are stopped on the way out.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

program.parse();
const raw = program.opts<{
  quick: boolean;
  out: string;
  threads: number;
  batchSize?: number;
  tpotTarget?: number;
  runs?: number;
  skipHttp?: boolean;
  skipInproc?: boolean;
  skipLoad?: boolean;
  skipCount?: boolean;
  skipConcurrency?: boolean;
  skipGateway?: boolean;
  skipFailover?: boolean;
  skipContention?: boolean;
  skipGrammar?: boolean;
  skipServing?: boolean;
  skipReference?: boolean;
  servingOnly?: boolean;
  servingRates?: number[];
  servingRequests?: number;
  readme?: boolean;
}>();
const others = !raw.servingOnly;
main({
  quick: raw.quick,
  out: raw.out,
  threads: raw.threads,
  ...(raw.batchSize ? { batchSize: raw.batchSize } : {}),
  ...(raw.tpotTarget ? { tpotTargetMs: raw.tpotTarget } : {}),
  ...(raw.runs !== undefined ? { runs: Math.max(1, raw.runs) } : {}),
  http: others && !raw.skipHttp,
  inproc: others && !raw.skipInproc,
  load: !raw.skipLoad,
  count: others && !raw.skipCount,
  concurrency: !raw.skipConcurrency,
  gateway: others && !raw.skipGateway,
  failover: others && !raw.skipFailover,
  contention: others && !raw.skipContention,
  grammar: others && !raw.skipGrammar,
  serving: !raw.skipServing,
  reference: !raw.skipReference,
  ...(raw.servingRates ? { servingRates: raw.servingRates } : {}),
  ...(raw.servingRequests ? { servingRequests: raw.servingRequests } : {}),
  ...(raw.readme !== undefined ? { readme: raw.readme } : {}),
}).catch((err: unknown) => {
  process.stderr.write(`[bench] failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
