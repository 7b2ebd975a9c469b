import type { RequestRecord } from "../core/request-record.js";
import type { UsageCounts, UsageEnd, UsageJournal } from "../keys/ledger.js";

const WINDOW_S = 60;
const WINDOW_MS = WINDOW_S * 1000;
const RECENT_ERRORS = 50;

/** Completion tokens per second of the last minute: one slot per second, reused as time goes round. */
class SecondRing {
  private readonly seconds = new Float64Array(WINDOW_S).fill(-1);
  private readonly tokens = new Float64Array(WINDOW_S);

  add(second: number, n: number): void {
    const i = second % WINDOW_S;
    if (this.seconds[i] !== second) {
      this.seconds[i] = second;
      this.tokens[i] = 0;
    }
    this.tokens[i]! += n;
  }

  /** Tokens in the minute that ends with `second`. */
  sum(second: number): number {
    let total = 0;
    for (let i = 0; i < WINDOW_S; i++) if (this.seconds[i]! > second - WINDOW_S) total += this.tokens[i]!;
    return total;
  }
}

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

/**
 * What the console's live view shows besides the engines' own counters: each model's completion tokens per
 * second over the last minute, counted as they are delivered (a stream's as it streams, through
 * {@link LiveView.journal}), its requests finished in that minute, and the last {@link RECENT_ERRORS} requests
 * answered with an error status (4xx and 5xx; a client that left is not an error). Fast, never throws, and
 * keeps a minute of figures at most.
 */
export class LiveView {
  private readonly finished: Array<{ at: number; model: string }> = [];
  private readonly delivered = new Map<string, SecondRing>();
  private readonly errors: RecentError[] = [];

  constructor(private readonly now: () => number = Date.now) {}

  /** The usage journal `inner`, telling this view of every completion token as it is delivered. */
  journal(inner: UsageJournal): UsageJournal {
    return {
      open: (start) => {
        const entry = inner.open(start);
        let counted = 0;
        const count = (c: UsageCounts) => {
          if (c.completionTokens <= counted) return;
          this.ring(start.model).add(Math.floor(this.now() / 1000), c.completionTokens - counted);
          counted = c.completionTokens;
        };
        return {
          deliver: (c: UsageCounts) => {
            entry.deliver(c);
            count(c);
          },
          end: (final: UsageEnd) => {
            entry.end(final);
            count(final);
          },
        };
      },
    };
  }

  /** The RequestObserver: finished requests per model, and the recent errors. */
  readonly observe = (r: RequestRecord): void => {
    const at = this.now();
    if (r.completion) {
      this.finished.push({ at, model: r.completion.model });
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

  /** Completion tokens per second (delivered) and requests finished, per model, over the last minute. */
  lastMinute(model: string): { tokensPerSecond: number; requests: number } {
    const now = this.now();
    this.prune(now);
    const tokens = this.delivered.get(model)?.sum(Math.floor(now / 1000)) ?? 0;
    const requests = this.finished.reduce((n, f) => n + (f.model === model ? 1 : 0), 0);
    return { tokensPerSecond: Math.round((tokens / WINDOW_S) * 10) / 10, requests };
  }

  recentErrors(): readonly RecentError[] {
    return this.errors;
  }

  private ring(model: string): SecondRing {
    let ring = this.delivered.get(model);
    if (!ring) this.delivered.set(model, (ring = new SecondRing()));
    return ring;
  }

  private prune(now: number): void {
    let drop = 0;
    while (drop < this.finished.length && this.finished[drop]!.at <= now - WINDOW_MS) drop++;
    if (drop > 0) this.finished.splice(0, drop);
  }
}
