import { Pool } from "undici";
import { startServer, type BenchServer } from "./server.js";
import { interTokenGaps, streamChat, type ChatTarget, type Generation } from "./sse-client.js";
import { median, percentile, round, sum } from "./stats.js";

/**
 * The gateway's cost: what a Lucena One server whose model has an `upstream` block adds to a request, and to
 * each streamed token, against calling its replica directly.
 *
 * Set-up: one worker on the tiny made model (its compute is next to nothing, so the HTTP and JSON work the
 * gateway adds is not lost in the engine's time) and one gateway in front of it, both real `lucena serve`
 * processes. The worker has 64 sequences, so 64 concurrent requests are batched, not queued behind each other
 * (queue_size 128 leaves room for the gateway's counting requests). The gateway keeps the default upstream
 * settings (tokenizer "auto", counting on the worker's /v1/tokens/count when it must; these requests give
 * max_tokens and short prompts, so a byte bound shows they fit and no count is needed) with 2 s health probes.
 * A second gateway that counts prompts itself (upstream.tokenizer: the GGUF) is measured at concurrency 1 too.
 *
 * Per request: the same short non-streaming chat completion with max_tokens 1, sent directly and through the
 * gateway in alternating blocks (direct, gateway, gateway, direct, …) so that drift of the machine falls on both
 * alike; every latency is one request as its client sees it (request sent → whole body read), over undici pools
 * that keep their connections. Added p50/p99 = the gateway's percentile − the direct one (latencies are not
 * paired one to one, so this is the difference of the distributions, not a percentile of differences).
 *
 * Per token: the same streamed completion (fixed seed, so both ways generate the same tokens; the tiny model
 * runs to max_tokens) directly and through the gateway, alternately, read with bench/sse-client.ts (fetch, whose
 * global agent keeps connections). Added per token = (decode span through the gateway − direct) ÷ (tokens − 1),
 * where the decode span is first content chunk → last: the request's own fixed cost is left to the per-request
 * figure. Taken per adjacent pair of runs, then the median. The inter-token gaps' p50/p99 are shown each way;
 * the end-to-end figure (total time difference ÷ tokens) too. With 64 streams at once the figure that means
 * something is the aggregate one: (round wall time through the gateway − direct) ÷ all the round's tokens.
 *
 * The worker, the gateway and this client share the machine's cores (two on the reference machine): every
 * microsecond of CPU the gateway spends is taken from the worker or the client, so these figures include that
 * contention, as a deployment with the gateway on the same host would see.
 */

export interface GatewayPlan {
  /** Requests each way at concurrency 1. */
  requests: number;
  /** Requests per block at concurrency 1 (blocks alternate direct / gateway). */
  block: number;
  /** Rounds each way at concurrency 64: one round is 64 clients × `perClient` requests each. */
  rounds64: number;
  perClient: number;
  /** Tokens per streamed completion. */
  streamTokens: number;
  /** Streamed completions each way at concurrency 1. */
  streamRuns: number;
  /** Rounds of 64 simultaneous streams each way. */
  streamRuns64: number;
}

export interface LatencySummary {
  requests: number;
  p50_ms: number;
  p99_ms: number;
  mean_ms: number;
  max_ms: number;
  req_s: number;
}

export interface GatewayRequestResult {
  concurrency: number;
  /**
   * How the gateway counted prompts: "upstream" (the default, tokenizer "auto": a /v1/tokens/count round trip to
   * the worker per request) or "local" (tokenizer: the GGUF file, counted in the gateway's process).
   */
  counting: "upstream" | "local";
  direct: LatencySummary;
  gateway: LatencySummary;
  added_p50_ms: number;
  added_p99_ms: number;
}

export interface StreamSummary {
  runs: number;
  ttft_ms: number;
  /** First content chunk → last (median over runs; at 64 streams, over every stream of every round). */
  decode_span_ms: number;
  total_ms: number;
  gap_p50_ms: number;
  gap_p99_ms: number;
  /** Completion tokens of every stream ÷ the round's wall time (request sent → last chunk of any stream). */
  aggregate_tok_s: number;
}

export interface GatewayTokenResult {
  streams: number;
  tokens: number;
  direct: StreamSummary;
  gateway: StreamSummary;
  /** Median over pairs of ((gateway − direct) decode span ÷ (tokens − 1)), µs. */
  added_per_token_us: number;
  /** Median over pairs of ((gateway − direct) total time ÷ tokens), µs: includes the request's fixed cost. */
  added_per_token_end_to_end_us: number;
  /** Median over pairs of ((gateway − direct) round wall time ÷ every stream's tokens), µs: the cost in throughput. */
  added_per_token_aggregate_us: number;
  added_gap_p50_us: number;
  added_gap_p99_us: number;
}

export interface GatewayResult {
  worker: {
    model: string;
    context_size: number;
    parallel: number;
    queue_size: number;
    loaded: Record<string, unknown>;
  };
  gateway: { loaded: Record<string, unknown>; health_interval_seconds: number; tokenizer: string };
  request: GatewayRequestResult[];
  token: GatewayTokenResult[];
  warnings: string[];
  duration_s: number;
}

const MESSAGES = [{ role: "user" as const, content: "Say hello." }];
const TEMPERATURE = 0.7;
const SEED = 42;
const CLIENTS = 64;

function pick(entry: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, entry[k]]));
}

function target(server: BenchServer): ChatTarget {
  return { url: server.url, key: server.key, model: server.model };
}

/** One client pool per server, kept across the phase: connections are opened once and reused. */
class Client {
  readonly pool: Pool;
  private readonly body: string;
  private readonly headers: Record<string, string>;

  constructor(readonly server: BenchServer) {
    this.pool = new Pool(server.url, { connections: CLIENTS, pipelining: 1, keepAliveTimeout: 60_000 });
    this.body = JSON.stringify({
      model: server.model,
      messages: MESSAGES,
      max_tokens: 1,
      temperature: TEMPERATURE,
      stream: false,
    });
    this.headers = { authorization: `Bearer ${server.key}`, "content-type": "application/json" };
  }

  /** One non-streaming completion; its latency in ms (sent → whole body read). */
  async once(): Promise<number> {
    const t0 = performance.now();
    const res = await this.pool.request({
      method: "POST",
      path: "/v1/chat/completions",
      headers: this.headers,
      body: this.body,
    });
    const text = await res.body.text();
    const ms = performance.now() - t0;
    if (res.statusCode !== 200) throw new Error(`${this.server.url}: ${res.statusCode} ${text.slice(0, 300)}`);
    return ms;
  }

  /** `clients` closed-loop clients, `each` requests apiece; every latency, and the block's wall time. */
  async block(clients: number, each: number, into: number[]): Promise<number> {
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: clients }, async () => {
        for (let i = 0; i < each; i++) into.push(await this.once());
      }),
    );
    return performance.now() - t0;
  }
}

function latency(times: number[], wallMs: number): LatencySummary {
  return {
    requests: times.length,
    p50_ms: round(percentile(times, 50), 3),
    p99_ms: round(percentile(times, 99), 3),
    mean_ms: round(sum(times) / times.length, 3),
    max_ms: round(Math.max(...times), 3),
    req_s: round(times.length / (wallMs / 1000), 0),
  };
}

/** ABBA order: direct, gateway, gateway, direct, … so neither side always runs first after a switch. */
const gatewayFirst = (i: number) => i % 2 === 1;

async function perRequest(
  direct: Client,
  gateway: Client,
  counting: GatewayRequestResult["counting"],
  concurrency: number,
  blocks: number,
  each: number,
): Promise<GatewayRequestResult> {
  const times = { direct: [] as number[], gateway: [] as number[] };
  const wall = { direct: 0, gateway: 0 };
  for (let b = 0; b < blocks; b++) {
    const order = gatewayFirst(b) ? (["gateway", "direct"] as const) : (["direct", "gateway"] as const);
    for (const side of order)
      wall[side] += await (side === "direct" ? direct : gateway).block(concurrency, each, times[side]);
  }
  const d = latency(times.direct, wall.direct);
  const g = latency(times.gateway, wall.gateway);
  return {
    concurrency,
    counting,
    direct: d,
    gateway: g,
    added_p50_ms: round(g.p50_ms - d.p50_ms, 3),
    added_p99_ms: round(g.p99_ms - d.p99_ms, 3),
  };
}

interface StreamRound {
  gens: Generation[];
  wallMs: number;
}

async function streamRound(server: BenchServer, streams: number, tokens: number): Promise<StreamRound> {
  // streamChat sends the body's fields as given: the seed goes through with the rest.
  const body = { messages: MESSAGES, max_tokens: tokens, temperature: TEMPERATURE, seed: SEED };
  const t0 = performance.now();
  const gens = await Promise.all(Array.from({ length: streams }, () => streamChat(target(server), body)));
  const wallMs = Math.max(...gens.map((g) => g.chunkTimes[g.chunkTimes.length - 1])) - t0;
  for (const g of gens) {
    if (g.completionTokens !== tokens)
      throw new Error(`a stream carried ${g.completionTokens} tokens, not ${tokens} (finish: ${g.finishReason})`);
  }
  return { gens, wallMs };
}

const span = (g: Generation) => g.chunkTimes[g.chunkTimes.length - 1] - g.chunkTimes[0];
const total = (g: Generation) => g.chunkTimes[g.chunkTimes.length - 1] - g.start;

function streamSummary(rounds: StreamRound[]): StreamSummary {
  const gens = rounds.flatMap((r) => r.gens);
  const gaps = gens.flatMap(interTokenGaps);
  return {
    runs: rounds.length,
    ttft_ms: round(median(gens.map((g) => g.chunkTimes[0] - g.start))),
    decode_span_ms: round(median(gens.map(span))),
    total_ms: round(median(gens.map(total))),
    gap_p50_ms: round(percentile(gaps, 50), 3),
    gap_p99_ms: round(percentile(gaps, 99), 3),
    aggregate_tok_s: round(median(rounds.map((r) => sum(r.gens.map((g) => g.completionTokens)) / (r.wallMs / 1000)))),
  };
}

async function perToken(
  direct: BenchServer,
  gateway: BenchServer,
  streams: number,
  runs: number,
  tokens: number,
): Promise<GatewayTokenResult> {
  const rounds = { direct: [] as StreamRound[], gateway: [] as StreamRound[] };
  const perTokenUs: number[] = [];
  const endToEndUs: number[] = [];
  const aggregateUs: number[] = [];
  for (let r = 0; r < runs; r++) {
    const order = gatewayFirst(r) ? (["gateway", "direct"] as const) : (["direct", "gateway"] as const);
    for (const side of order)
      rounds[side].push(await streamRound(side === "direct" ? direct : gateway, streams, tokens));
    // One pair: this run's direct and gateway rounds, each stream's median span (one stream at concurrency 1).
    const d = rounds.direct[r].gens;
    const g = rounds.gateway[r].gens;
    perTokenUs.push(((median(g.map(span)) - median(d.map(span))) / (tokens - 1)) * 1000);
    endToEndUs.push(((median(g.map(total)) - median(d.map(total))) / tokens) * 1000);
    aggregateUs.push(((rounds.gateway[r].wallMs - rounds.direct[r].wallMs) / (streams * tokens)) * 1000);
  }
  const d = streamSummary(rounds.direct);
  const g = streamSummary(rounds.gateway);
  return {
    streams,
    tokens,
    direct: d,
    gateway: g,
    added_per_token_us: round(median(perTokenUs), 1),
    added_per_token_end_to_end_us: round(median(endToEndUs), 1),
    added_per_token_aggregate_us: round(median(aggregateUs), 1),
    added_gap_p50_us: round((g.gap_p50_ms - d.gap_p50_ms) * 1000, 1),
    added_gap_p99_us: round((g.gap_p99_ms - d.gap_p99_ms) * 1000, 1),
  };
}

/**
 * Starts the worker and the gateway, measures, and stops them. Last, a second gateway that counts prompts
 * itself (upstream.tokenizer: the model's GGUF) is measured at concurrency 1, to show what the default's
 * counting round trip costs; it runs alone, after the first gateway stopped, so that its health probes do not
 * touch the other measurements.
 */
export async function measureGateway(opts: {
  cliPath: string;
  /** The tiny made model. */
  modelPath: string;
  plan: GatewayPlan;
  say: (text: string) => void;
}): Promise<GatewayResult> {
  const began = performance.now();
  const p = opts.plan;
  const worker = {
    id: "tiny",
    source: opts.modelPath,
    context_size: 2048,
    parallel: CLIENTS,
    queue_size: 2 * CLIENTS,
    threads: 1,
    system_prompt: null,
  };
  const upstreamModel = (upstream: Record<string, unknown>) => ({
    id: worker.id,
    context_size: worker.context_size,
    system_prompt: null,
    upstream,
  });
  const c1Blocks = Math.ceil(p.requests / p.block);
  opts.say(`gateway: starting a worker on the tiny model (${worker.parallel} sequences) and a gateway in front of it`);
  const w = await startServer({ cliPath: opts.cliPath, model: worker });
  const direct = new Client(w);
  const servers: BenchServer[] = [];
  const clients: Client[] = [];
  const stop = async () => {
    await Promise.all(clients.splice(0).map((c) => c.pool.close()));
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  };
  try {
    const upstream = { replicas: [{ url: w.url, api_key: w.key }], health_interval_seconds: 2 };
    const g = await startServer({ cliPath: opts.cliPath, model: upstreamModel(upstream) });
    servers.push(g);
    const gateway = new Client(g);
    clients.push(gateway);

    // Warm-up, not recorded: connections opened (64 each way), the gateway's counting dialect detected, JIT warm.
    for (const c of [direct, gateway]) await c.block(CLIENTS, 3, []);
    for (const c of [direct, gateway]) await c.block(1, 50, []);
    for (const s of [w, g]) await streamRound(s, 1, 32);

    const request: GatewayRequestResult[] = [];
    opts.say(`gateway: ${p.requests} requests each way, 1 client`);
    request.push(await perRequest(direct, gateway, "upstream", 1, c1Blocks, p.block));
    opts.say(`gateway: ${p.rounds64} round(s) each way of ${CLIENTS} clients × ${p.perClient} requests`);
    request.push(await perRequest(direct, gateway, "upstream", CLIENTS, p.rounds64, p.perClient));

    const token: GatewayTokenResult[] = [];
    opts.say(`gateway: ${p.streamRuns} stream(s) of ${p.streamTokens} tokens each way, 1 at a time`);
    token.push(await perToken(w, g, 1, p.streamRuns, p.streamTokens));
    opts.say(
      `gateway: ${p.streamRuns64} round(s) each way of ${CLIENTS} simultaneous streams of ${p.streamTokens} tokens`,
    );
    token.push(await perToken(w, g, CLIENTS, p.streamRuns64, p.streamTokens));
    const loaded = pick(g.loaded, ["replicas", "healthy"]);
    const warnings = g.warnings();
    await stop();

    opts.say(`gateway: ${p.requests} requests each way, 1 client, through a gateway that counts prompts itself`);
    const local = await startServer({
      cliPath: opts.cliPath,
      model: upstreamModel({ ...upstream, tokenizer: opts.modelPath }),
    });
    servers.push(local);
    const localClient = new Client(local);
    clients.push(localClient);
    await localClient.block(1, 50, []);
    request.push(await perRequest(direct, localClient, "local", 1, c1Blocks, p.block));
    warnings.push(...local.warnings(), ...w.warnings());

    return {
      worker: {
        model: "tiny (made model)",
        context_size: worker.context_size,
        parallel: worker.parallel,
        queue_size: worker.queue_size,
        loaded: pick(w.loaded, ["contextSize", "sequences", "threads", "ms"]),
      },
      gateway: { loaded, health_interval_seconds: upstream.health_interval_seconds, tokenizer: "auto" },
      request,
      token,
      warnings,
      duration_s: round((performance.now() - began) / 1000, 1),
    };
  } finally {
    clients.push(direct);
    servers.push(w);
    await stop();
  }
}
