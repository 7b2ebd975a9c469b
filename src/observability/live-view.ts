import type { RequestRecord } from "../core/request-record.js";

const WINDOW_MS = 60_000;
const RECENT_ERRORS = 50;

export interface RecentError {
  /** Epoch ms, when the request ended. */
  time: number;
  status: number;
  method: string;
  route: string | null;
  model: string | null;
  keyId: string | null;
  requestId: string;
}

interface Finished {
  at: number;
  model: string;
  completionTokens: number;
}

/**
 * What the console's live view shows besides the engines' own counters: each model's completion tokens and
 * requests over the last minute (counted as requests end: a stream counts when it is over), and the last
 * {@link RECENT_ERRORS} requests answered with an error status (4xx and 5xx; a client that left is not an
 * error). A RequestObserver: fast, never throws, keeps a minute of records at most.
 */
export class LiveView {
  private readonly finished: Finished[] = [];
  private readonly errors: RecentError[] = [];

  constructor(private readonly now: () => number = Date.now) {}

  readonly observe = (r: RequestRecord): void => {
    const at = this.now();
    if (r.completion) {
      this.finished.push({ at, model: r.completion.model, completionTokens: r.completion.completionTokens });
      this.prune(at);
    }
    if (r.status >= 400 && r.status !== 499) {
      this.errors.unshift({
        time: at,
        status: r.status,
        method: r.method,
        route: r.route,
        model: r.completion?.model ?? null,
        keyId: r.keyId,
        requestId: r.requestId,
      });
      this.errors.length = Math.min(this.errors.length, RECENT_ERRORS);
    }
  };

  /** Completion tokens per second and requests, per model, over the last minute. */
  lastMinute(model: string): { tokensPerSecond: number; requests: number } {
    this.prune(this.now());
    let tokens = 0;
    let requests = 0;
    for (const f of this.finished) {
      if (f.model !== model) continue;
      tokens += f.completionTokens;
      requests++;
    }
    return { tokensPerSecond: Math.round((tokens / (WINDOW_MS / 1000)) * 10) / 10, requests };
  }

  recentErrors(): readonly RecentError[] {
    return this.errors;
  }

  private prune(now: number): void {
    let drop = 0;
    while (drop < this.finished.length && this.finished[drop]!.at <= now - WINDOW_MS) drop++;
    if (drop > 0) this.finished.splice(0, drop);
  }
}
