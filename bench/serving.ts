import { rng } from "../test/helpers/rng.js";
import { exactPrompt, type ExactPrompt } from "./prompts.js";
import { streamChat, type ChatMessageBody, type ChatTarget } from "./sse-client.js";
import { percentile, round, sleep, sum } from "./stats.js";

/**
 * The open-loop serving benchmark, after vLLM's benchmarks/benchmark_serving.py: requests arrive as a Poisson
 * process at a fixed rate whether or not earlier ones have finished (a closed loop, where each client waits for
 * its answer, would slow its own arrivals down as the server saturates and hide the queueing). Mixed prompt and
 * answer lengths; every prompt opens differently, so no server gains from a cached prefix. The same seeded
 * request list, and the same arrival times, go to every server measured.
 *
 * Per request: TTFT = first content chunk − send; TPOT = (last chunk − first chunk) ÷ (completion tokens − 1).
 * Per run: tokens/s and requests/s over the run's wall time (first request sent → last token received), and
 * goodput, the requests per second that met both targets in SLO.
 */

/**
 * Goodput's targets, for a 0.43B model on 2 CPU cores: a first token within 10 s (a 320-token prompt alone takes
 * about 3 s to evaluate on 2 AVX2 cores, so this leaves room for a queue a few requests deep), then tokens at
 * least 4 a second on average (250 ms each: about reading speed), where one stream alone decodes at about 30.
 */
export const SLO = { ttft_ms: 10_000, tpot_ms: 250 } as const;

export interface ServingShape {
  /** Prompt tokens (template included, as the server counts them), uniform over [min, max]. */
  promptTokens: readonly [number, number];
  /** max_tokens, uniform over [min, max]; answers are held to it with `ignore_eos` where the server has it. */
  outputTokens: readonly [number, number];
}

/**
 * Prompts from about the chat template and a sentence (the template and system message of these prompts take ~75
 * tokens) to a page; answers from a line to a paragraph.
 */
export const SERVING_SHAPE: ServingShape = { promptTokens: [80, 320], outputTokens: [32, 128] };

export interface PlannedRequest {
  index: number;
  /** Time since the previous arrival, for a rate of 1 request/s (exponential; mean exactly 1); the first is 0. */
  gap: number;
  prompt_tokens: number;
  max_tokens: number;
}

/**
 * The requests of one run before their text: lengths and unit-rate arrival gaps from one seed. Every rate uses
 * the same plan, its gaps divided by the rate, so rates differ only in how fast the same requests arrive.
 *
 * The exponential gaps are scaled to a mean of exactly 1, so that the last request arrives at (count − 1) ÷ rate
 * and every run offers its nominal rate: with a few requests a run, an unscaled draw offers anything from about
 * half to twice the rate (seed 13's ten gaps averaged 0.66). Scaled exponential gaps are the gaps of a Poisson
 * process given how many arrivals fall in the run's span (uniform order statistics): still Poisson arrivals.
 */
export function planRequests(seed: number, count: number, shape: ServingShape = SERVING_SHAPE): PlannedRequest[] {
  const random = rng(seed);
  const between = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const plan = Array.from({ length: count }, (_, index) => {
    const gap = -Math.log(1 - random());
    return {
      index,
      gap: index === 0 ? 0 : gap,
      prompt_tokens: between(...shape.promptTokens),
      max_tokens: between(...shape.outputTokens),
    };
  });
  const total = plan.reduce((t, p) => t + p.gap, 0);
  for (const p of plan) if (total > 0) p.gap *= (count - 1) / total;
  return plan;
}

/** When each request is sent, in seconds from the run's start, at `rate` requests per second. */
export function arrivalTimes(plan: readonly PlannedRequest[], rate: number): number[] {
  let t = 0;
  return plan.map((p) => (t += p.gap / rate));
}

export interface ServingRequest extends PlannedRequest {
  messages: ChatMessageBody[];
}

export interface RateWorkload {
  rate: number;
  requests: ServingRequest[];
}

/**
 * The text of every request of every rate, exact to the token by `count` (the project server's own counter). Each
 * rate has its own openings, so a run finds nothing of the previous run's prompts in any sequence.
 */
export async function buildWorkloads(
  count: (messages: ChatMessageBody[]) => Promise<number>,
  opts: { rates: readonly number[]; requests: number; seed: number; shape?: ServingShape },
): Promise<RateWorkload[]> {
  const plan = planRequests(opts.seed, opts.requests, opts.shape);
  const out: RateWorkload[] = [];
  for (const [r, rate] of opts.rates.entries()) {
    const requests: ServingRequest[] = [];
    for (const p of plan) {
      const prompt: ExactPrompt = await exactPrompt(
        count,
        p.prompt_tokens,
        `Request ${opts.seed}-${r}-${p.index}.`,
        20_000 + 1000 * r + p.index,
      );
      requests.push({ ...p, messages: prompt.messages });
    }
    out.push({ rate, requests });
  }
  return out;
}

/** One request as the client saw it; times in ms. */
export interface RequestOutcome {
  index: number;
  ok: boolean;
  error?: string;
  /** Send time from the run's start, and how late that was against its planned arrival. */
  sent_ms: number;
  late_ms: number;
  prompt_tokens: number;
  completion_tokens: number;
  max_tokens: number;
  finish_reason: string | null;
  ttft_ms: number;
  /** (last chunk − first chunk) ÷ (completion tokens − 1); 0 for a one-token answer (as vLLM counts it). */
  tpot_ms: number;
  e2e_ms: number;
  /** Last chunk, from the run's start. */
  end_ms: number;
}

export interface Spread {
  mean: number;
  p50: number;
  p90: number;
  p99: number;
}

export interface ServingRun {
  server: string;
  rate: number;
  requests: number;
  completed: number;
  failed: number;
  /** First request sent → last token of any request. */
  duration_s: number;
  request_s: number;
  /** Completion tokens received (usage) ÷ duration. */
  output_tok_s: number;
  completion_tokens: number;
  /** Sum of max_tokens: what a run with every answer held to its length receives. */
  requested_tokens: number;
  /** Answers that ended before max_tokens (an end-of-sequence token where the server does not ignore it). */
  ended_early: number;
  /** usage.prompt_tokens − the planned length → how many answers said so, for the answers where it is not 0. */
  prompt_token_offsets: Record<string, number>;
  ttft_ms: Spread;
  tpot_ms: Spread;
  e2e_ms: Spread;
  /** Requests that met both SLO targets ÷ duration, and their share of all requests. */
  goodput_req_s: number;
  slo_met: number;
  /** The latest a request was sent against its planned arrival (the client's own delay). */
  send_late_ms_max: number;
  errors?: string[];
}

function offsets(diffs: readonly number[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const d of diffs) if (d !== 0) out[String(d)] = (out[String(d)] ?? 0) + 1;
  return out;
}

function spread(values: readonly number[]): Spread {
  return {
    mean: round(values.length ? sum(values) / values.length : NaN),
    p50: round(percentile(values, 50)),
    p90: round(percentile(values, 90)),
    p99: round(percentile(values, 99)),
  };
}

/** The run's figures from its requests' outcomes; `slo` in ms. */
export function servingMetrics(
  server: string,
  rate: number,
  outcomes: readonly RequestOutcome[],
  planned: readonly Pick<PlannedRequest, "prompt_tokens">[],
  slo: { ttft_ms: number; tpot_ms: number } = SLO,
): ServingRun {
  const ok = outcomes.filter((o) => o.ok);
  const durationMs = Math.max(0, ...outcomes.map((o) => (o.ok ? o.end_ms : o.sent_ms + o.e2e_ms)));
  const perS = (n: number) => round(durationMs > 0 ? n / (durationMs / 1000) : NaN, 3);
  const completion = sum(ok.map((o) => o.completion_tokens));
  const good = ok.filter((o) => o.ttft_ms <= slo.ttft_ms && o.tpot_ms <= slo.tpot_ms).length;
  const errors = [...new Set(outcomes.filter((o) => !o.ok).map((o) => o.error ?? "unknown"))].slice(0, 3);
  return {
    server,
    rate,
    requests: outcomes.length,
    completed: ok.length,
    failed: outcomes.length - ok.length,
    duration_s: round(durationMs / 1000, 2),
    request_s: perS(ok.length),
    output_tok_s: round(perS(completion), 2),
    completion_tokens: completion,
    requested_tokens: sum(outcomes.map((o) => o.max_tokens)),
    ended_early: ok.filter((o) => o.completion_tokens < o.max_tokens).length,
    prompt_token_offsets: offsets(ok.map((o) => o.prompt_tokens - (planned[o.index]?.prompt_tokens ?? NaN))),
    ttft_ms: spread(ok.map((o) => o.ttft_ms)),
    tpot_ms: spread(ok.map((o) => o.tpot_ms)),
    e2e_ms: spread(ok.map((o) => o.e2e_ms)),
    goodput_req_s: perS(good),
    slo_met: round(outcomes.length ? good / outcomes.length : NaN, 3),
    send_late_ms_max: round(Math.max(0, ...outcomes.map((o) => o.late_ms))),
    ...(errors.length ? { errors } : {}),
  };
}

/**
 * Sends the workload's requests at their arrival times (open loop: nothing waits for an answer) and waits for
 * every answer. Each request is a streamed chat completion (usage asked for), held to max_tokens with
 * `ignore_eos` (both servers honour it), and given up after `timeoutMs`.
 */
export async function runOpenLoop(
  target: ChatTarget,
  workload: RateWorkload,
  opts: { temperature: number; timeoutMs: number },
): Promise<RequestOutcome[]> {
  const arrivals = arrivalTimes(workload.requests, workload.rate);
  const t0 = performance.now();
  const one = async (req: ServingRequest, due: number): Promise<RequestOutcome> => {
    const sent = performance.now();
    const base = { index: req.index, sent_ms: sent - t0, late_ms: Math.max(0, sent - due), max_tokens: req.max_tokens };
    try {
      const g = await streamChat(
        target,
        {
          messages: req.messages,
          max_tokens: req.max_tokens,
          temperature: opts.temperature,
          ignore_eos: true,
        },
        AbortSignal.timeout(opts.timeoutMs),
      );
      const first = g.chunkTimes[0];
      const last = g.chunkTimes[g.chunkTimes.length - 1];
      return {
        ...base,
        ok: true,
        prompt_tokens: g.promptTokens,
        completion_tokens: g.completionTokens,
        finish_reason: g.finishReason,
        ttft_ms: first - g.start,
        tpot_ms: g.completionTokens > 1 ? (last - first) / (g.completionTokens - 1) : 0,
        e2e_ms: last - g.start,
        end_ms: last - t0,
      };
    } catch (err) {
      return {
        ...base,
        ok: false,
        error: err instanceof Error ? err.message.slice(0, 200) : String(err),
        prompt_tokens: 0,
        completion_tokens: 0,
        finish_reason: null,
        ttft_ms: NaN,
        tpot_ms: NaN,
        e2e_ms: performance.now() - sent,
        end_ms: performance.now() - t0,
      };
    }
  };
  const pending: Promise<RequestOutcome>[] = [];
  for (const [i, req] of workload.requests.entries()) {
    const due = t0 + arrivals[i] * 1000;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    pending.push(one(req, due));
  }
  return Promise.all(pending);
}

/** Every rate of the sweep in turn against one server, a short pause between runs. */
export async function sweep(
  server: string,
  target: ChatTarget,
  workloads: readonly RateWorkload[],
  opts: { temperature: number; timeoutMs: number; say: (text: string) => void },
): Promise<ServingRun[]> {
  const runs: ServingRun[] = [];
  for (const w of workloads) {
    const last = arrivalTimes(w.requests, w.rate).at(-1) ?? 0;
    opts.say(`${server}: ${w.requests.length} requests at ${w.rate} req/s (arrivals over ${round(last, 1)} s)`);
    const run = servingMetrics(server, w.rate, await runOpenLoop(target, w, opts), w.requests);
    opts.say(
      `  ${run.output_tok_s} tok/s, ${run.request_s} req/s, TTFT p50 ${Math.round(run.ttft_ms.p50)} ms, ` +
        `TPOT p50 ${Math.round(run.tpot_ms.p50)} ms, goodput ${run.goodput_req_s} req/s${run.failed ? `, ${run.failed} failed` : ""}`,
    );
    runs.push(run);
    await sleep(1000);
  }
  return runs;
}
