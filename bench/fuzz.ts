import { request } from "undici";
import type { BenchServer } from "./server.js";
import { percentile, round, sleep } from "./stats.js";

/** What a burst of hostile bodies did to everyone else: the event loop's worst delay, and what clients felt. */
export interface FuzzResult {
  requests: number;
  /** Answers by status ("error" when the connection failed). */
  statuses: Record<string, number>;
  body_mb: number;
  duration_s: number;
  /** The server's worst event-loop delay during the burst (prom-client's `nodejs_eventloop_lag_max_seconds`). */
  loop_delay_max_ms: number;
  /** `GET /v1/models` every 20 ms during the burst. */
  probe: { requests: number; p50_ms: number; p99_ms: number; max_ms: number };
  /** A stream running through the burst: its longest silence between two chunks. */
  stream_max_gap_ms: number;
}

/** Bytes of the largest prompt: under the default 4 MiB body limit with its JSON around it. */
const BIG = 3_900_000;
const r32 = (seed: number) => () => (seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32;

/**
 * The bodies of the burst, in turn: large prompts that cannot fit, a conversation to trim (counted: a completion of
 * it would spend minutes in prefill, measuring the engine instead), and malformed input.
 */
function bodies(model: string, seed: number): { path: string; body: Buffer }[] {
  const rand = r32(seed);
  const words = ["alpha", "beta", "gamma", "delta", "def f(x):\n    return x\n", "日本語", "é", "   "];
  const text = (bytes: number) => {
    const parts: string[] = [];
    let n = 0;
    while (n < bytes) {
      const w = words[Math.floor(rand() * words.length)] + " ";
      parts.push(w);
      n += Buffer.byteLength(w);
    }
    return parts.join("");
  };
  const big = text(BIG);
  const chunk = text(48_000);
  const json = (path: string, v: unknown) => ({ path, body: Buffer.from(JSON.stringify(v)) });
  return [
    json("/v1/tokens/count", { model, messages: [{ role: "user", content: big }] }),
    json("/v1/chat/completions", { model, max_tokens: 1, messages: [{ role: "user", content: big }] }),
    json("/v1/tokens/count", {
      model,
      messages: Array.from({ length: 81 }, (_, i) => ({ role: i % 2 ? "assistant" : "user", content: chunk })),
    }),
    {
      path: "/v1/chat/completions",
      body: Buffer.from(`{"model":"${model}","messages":[{"role":"user","content":"${"x".repeat(100_000)}`),
    },
    { path: "/v1/chat/completions", body: Buffer.from("[".repeat(50_000) + "]".repeat(50_000)) },
    {
      path: "/v1/tokens/count",
      body: Buffer.concat([
        Buffer.from('{"model":"'),
        Buffer.from(Array.from({ length: 200_000 }, () => Math.floor(rand() * 256))),
        Buffer.from('"}'),
      ]),
    },
    json("/v1/chat/completions", { model: "m".repeat(1_000_000), messages: [{ role: "user", content: "hi" }] }),
    json("/v1/chat/completions", { model, messages: [{ role: "user", content: 42 }], temperature: "hot" }),
  ];
}

async function loopDelayMaxMs(server: BenchServer): Promise<number> {
  const text = await (await fetch(`${server.opsUrl}/metrics`)).text();
  const m = /^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(text);
  return m ? Number(m[1]) * 1000 : NaN;
}

/**
 * Sends `requests` hostile bodies, `parallel` at a time, while one stream runs and a probe asks for the model list
 * every 20 ms. prom-client resets its event-loop histogram at every scrape, so the scrape before the burst starts
 * the measurement and the one after reads the burst's worst delay.
 */
export async function fuzzBurst(
  server: BenchServer,
  opts: { requests: number; parallel: number; seed: number },
): Promise<FuzzResult> {
  const auth = { authorization: `Bearer ${server.key}` };
  const list = bodies(server.model, opts.seed);
  const statuses: Record<string, number> = {};
  let done = false;

  const probeTimes: number[] = [];
  const probe = (async () => {
    while (!done) {
      const t0 = performance.now();
      const res = await request(`${server.url}/v1/models`, { headers: auth });
      await res.body.dump();
      probeTimes.push(performance.now() - t0);
      await sleep(20);
    }
  })();

  // Streams of a few hundred tokens, one after another, so that the burst's completions are never queued behind
  // one long generation: the longest silence inside any of them is what a streaming client felt.
  let maxGap = 0;
  const stream = (async () => {
    while (!done) {
      const res = await request(`${server.url}/v1/chat/completions`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({
          model: server.model,
          stream: true,
          max_tokens: 300,
          messages: [{ role: "user", content: "Go on." }],
        }),
      });
      let last: number | null = null;
      for await (const _ of res.body) {
        const now = performance.now();
        if (last !== null) maxGap = Math.max(maxGap, now - last);
        last = now;
      }
    }
  })();

  await loopDelayMaxMs(server); // resets the server's histogram
  const began = performance.now();
  let next = 0;
  let bytes = 0;
  const worker = async () => {
    while (next < opts.requests) {
      const { path, body } = list[next++ % list.length];
      bytes += body.length;
      try {
        const res = await request(`${server.url}${path}`, {
          method: "POST",
          headers: { ...auth, "content-type": "application/json" },
          body,
        });
        await res.body.dump();
        statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
      } catch {
        statuses.error = (statuses.error ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: opts.parallel }, worker));
  const duration = performance.now() - began;
  const loopMax = await loopDelayMaxMs(server);
  done = true;
  await Promise.all([probe, stream.catch(() => undefined)]);
  return {
    requests: opts.requests,
    statuses,
    body_mb: round(bytes / 2 ** 20, 1),
    duration_s: round(duration / 1000, 1),
    loop_delay_max_ms: round(loopMax, 1),
    probe: {
      requests: probeTimes.length,
      p50_ms: round(percentile(probeTimes, 50)),
      p99_ms: round(percentile(probeTimes, 99)),
      max_ms: round(Math.max(...probeTimes)),
    },
    stream_max_gap_ms: round(maxGap, 1),
  };
}
