import autocannon from "autocannon";
import type { BenchServer } from "./server.js";
import { percentile, round } from "./stats.js";

export interface LoadResult {
  route: string;
  connections: number;
  duration_s: number;
  requests: number;
  req_s: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  non_2xx: number;
  errors: number;
}

export interface LoadTarget {
  route: "GET /v1/models" | "POST /v1/tokens/count";
  connections: number;
  durationS: number;
}

/**
 * Runs autocannon against one authenticated route. Latencies are taken from autocannon's per-response event
 * (fractional ms) rather than its histogram, whose resolution is 1 ms, too coarse for a 5 ms goal.
 */
export async function runLoad(server: BenchServer, target: LoadTarget): Promise<LoadResult> {
  const [method, path] = target.route.split(" ") as ["GET" | "POST", string];
  const headers: Record<string, string> = { authorization: `Bearer ${server.key}` };
  let body: string | undefined;
  if (method === "POST") {
    headers["content-type"] = "application/json";
    body = JSON.stringify({
      model: server.model,
      messages: [{ role: "user", content: "Write a function that reverses a string." }],
    });
  }
  const times: number[] = [];
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const options: autocannon.Options = {
      url: `${server.url}${path}`,
      method,
      headers,
      connections: target.connections,
      duration: target.durationS,
      ...(body ? { body } : {}),
    };
    const instance = autocannon(options, (err: unknown, res: autocannon.Result) =>
      err ? reject(err instanceof Error ? err : new Error(JSON.stringify(err))) : resolve(res),
    );
    // The emitter passes the client first; @types/autocannon leaves it out.
    (instance as unknown as NodeJS.EventEmitter).on(
      "response",
      (_client: unknown, status: number, _bytes: number, ms: number) => {
        if (status >= 200 && status < 300) times.push(ms);
      },
    );
  });
  return {
    route: target.route,
    connections: target.connections,
    duration_s: round(result.duration),
    requests: result.requests.total,
    req_s: round(result.requests.total / result.duration, 0),
    p50_ms: round(percentile(times, 50), 3),
    p99_ms: round(percentile(times, 99), 3),
    max_ms: round(percentile(times, 100), 3),
    non_2xx: result.non2xx,
    errors: result.errors,
  };
}
