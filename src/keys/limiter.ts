import type { Principal } from "../core/principal.js";
import { errors } from "../core/errors.js";

const SLOT_MS = 1000;
/** The window is a minute of one-second slots: a request leaves it 60 to 61 s after it was admitted. */
const SLOTS = 60;
const WINDOW_MS = SLOT_MS * SLOTS;

/**
 * A sliding minute of one-second slots, each holding what was admitted in it, with running totals: admitting,
 * settling and reading are O(1) whatever the traffic (the slots that leave the window are swept as time moves,
 * at most SLOTS of them per call).
 */
class MinuteWindow {
  // SLOTS entries each, indexed only by slot(…), which is in [0, SLOTS): the `!`s below cannot meet undefined.
  private readonly requests = new Array<number>(SLOTS).fill(0);
  private readonly tokens = new Array<number>(SLOTS).fill(0);
  /** Which second each slot holds. */
  private readonly second = new Array<number>(SLOTS).fill(-Infinity);
  private head = -Infinity;
  requestTotal = 0;
  tokenTotal = 0;

  /** Moves the window to `now`; returns the current second. */
  advance(now: number): number {
    const sec = Math.floor(now / SLOT_MS);
    if (sec <= this.head) return this.head; // a clock that steps back keeps the window where it is
    const from = sec - this.head >= SLOTS ? sec - SLOTS + 1 : this.head + 1;
    for (let s = from; s <= sec; s++) {
      const i = slot(s);
      this.requestTotal -= this.requests[i]!; // i = slot(s)
      this.tokenTotal -= this.tokens[i]!;
      this.requests[i] = 0;
      this.tokens[i] = 0;
      this.second[i] = s;
    }
    this.head = sec;
    return sec;
  }

  add(sec: number, requests: number, tokens: number): void {
    const i = slot(sec);
    if (this.second[i] !== sec) return; // already out of the window
    this.requests[i]! += requests; // i = slot(sec)
    this.tokens[i]! += tokens;
    this.requestTotal += requests;
    this.tokenTotal += tokens;
  }

  /** Milliseconds until the oldest admitted request leaves the window (0: none in it). */
  requestsFreeIn(now: number): number {
    for (let s = this.head - SLOTS + 1; s <= this.head; s++) {
      if (this.requests[slot(s)]! > 0) return (s + SLOTS) * SLOT_MS - now;
    }
    return 0;
  }

  /** Milliseconds until enough of the minute's tokens leave the window for `need` more to fit under `limit`. */
  tokensFreeIn(need: number, limit: number, now: number): number {
    let over = this.tokenTotal + need - limit;
    if (over <= 0) return 0;
    for (let s = this.head - SLOTS + 1; s <= this.head; s++) {
      over -= this.tokens[slot(s)]!;
      if (over <= 0) return (s + SLOTS) * SLOT_MS - now;
    }
    return WINDOW_MS;
  }
}

const slot = (sec: number) => ((sec % SLOTS) + SLOTS) % SLOTS;

interface KeyState {
  /** Completions admitted (requests and tokens), for rpm and tpm. */
  readonly completions: MinuteWindow;
  /** Token counts admitted, for their own rate. */
  readonly counts: MinuteWindow;
  active: number;
}

/**
 * A completion let in by the key's request limits. Its tokens are reserved with `reserve` once the prompt is
 * built; settle it with the tokens it really used, or cancel it if it never ran.
 */
export interface Admission {
  /** x-ratelimit-* headers for the response (updated by `reserve`). */
  readonly headers: Record<string, string>;
  /**
   * Reserves the prompt and the most the answer may take against the key's tokens per minute; over the limit,
   * throws a 429 and the admission is cancelled (a refused request spends nothing).
   */
  reserve(tokens: number, now?: number): void;
  /** The request is over: it keeps its place in the minute with the tokens it really used. */
  settle(actualTokens: number): void;
  /** Undoes the admission entirely (the request was refused before it ran). */
  cancel(): void;
}

export interface RateLimiterOptions {
  /** Token counts a key may make per minute, per completion its rpm allows (`count_rpm_factor`); default 10. */
  countRpmFactor?: number;
}

/** OpenAI's reset format: "1s", "6m0s", "0.5s". */
function resetIn(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${Math.round(s * 10) / 10}s`;
  return `${Math.floor(s / 60)}m${Math.round(s % 60)}s`;
}

const retryAfter = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

/**
 * Per-key limits over a sliding minute, in one-second steps: completions per minute (`rpm`), tokens per minute
 * (`tpm`: prompt + completion; the prompt and the most the answer may take are reserved once the prompt is built
 * and settled to the real count at the end), completions at once (`concurrency`), and token counts per minute
 * (rpm × `countRpmFactor`, a rate of their own so that counting never uses up a key's completions).
 *
 * The request checks (`admit`) are cheap and run before any tokenization; the token check (`reserve`) after it.
 * Concurrency contract: every call is synchronous and runs on the event loop, so checking and reserving are one
 * atomic step: N simultaneous requests against a limit of N admit exactly N. A key without limits keeps no state.
 */
export class RateLimiter {
  private readonly keys = new Map<string, KeyState>();
  private readonly countRpmFactor: number;

  constructor(opts: RateLimiterOptions = {}) {
    this.countRpmFactor = opts.countRpmFactor ?? 10;
  }

  private state(p: Principal): KeyState | null {
    const { rpm, tpm, concurrency } = p.limits;
    if (rpm === null && tpm === null && concurrency === null) return null;
    let s = this.keys.get(p.keyId);
    if (!s) {
      s = { completions: new MinuteWindow(), counts: new MinuteWindow(), active: 0 };
      this.keys.set(p.keyId, s);
    }
    return s;
  }

  /** Admits a completion against the key's concurrency and requests per minute (429 when over either). */
  admit(p: Principal, now = Date.now()): Admission {
    const { rpm, tpm, concurrency } = p.limits;
    const headers: Record<string, string> = {};
    const state = this.state(p);
    if (!state) return { headers, reserve: () => {}, settle: () => {}, cancel: () => {} };
    const w = state.completions;
    const sec = w.advance(now);

    const describe = (admitted: number, active: number, tokens: number) => {
      if (rpm !== null) {
        headers["x-ratelimit-limit-requests"] = String(rpm);
        headers["x-ratelimit-remaining-requests"] = String(Math.max(0, rpm - w.requestTotal - admitted));
        headers["x-ratelimit-reset-requests"] = resetIn(
          w.requestTotal + admitted >= rpm ? w.requestsFreeIn(now) || WINDOW_MS : 0,
        );
      }
      if (tpm !== null) {
        headers["x-ratelimit-limit-tokens"] = String(tpm);
        headers["x-ratelimit-remaining-tokens"] = String(Math.max(0, tpm - w.tokenTotal - tokens));
        headers["x-ratelimit-reset-tokens"] = resetIn(w.tokensFreeIn(tokens, tpm, now));
      }
      if (concurrency !== null) {
        headers["x-ratelimit-limit-concurrency"] = String(concurrency);
        headers["x-ratelimit-remaining-concurrency"] = String(Math.max(0, concurrency - active));
      }
    };
    const refuse = (message: string, retryMs: number): never => {
      describe(0, state.active, 0);
      throw errors.rateLimited(message, retryAfter(retryMs), { ...headers });
    };
    if (concurrency !== null && state.active >= concurrency) {
      refuse(`Too many requests at once for this key (limit ${concurrency}). Retry when one finishes.`, SLOT_MS);
    }
    if (rpm !== null && w.requestTotal >= rpm) {
      refuse(`Rate limit reached: ${rpm} requests per minute for this key.`, w.requestsFreeIn(now));
    }

    w.add(sec, 1, 0);
    state.active++;
    describe(0, state.active, 0);
    let reserved = 0;
    let done = false;
    const end = (keep: boolean, tokens: number) => {
      if (done) return;
      done = true;
      state.active--;
      w.add(sec, keep ? 0 : -1, tokens - reserved);
    };
    return {
      headers,
      reserve: (tokens, at = Date.now()) => {
        if (done) return;
        if (tpm !== null) {
          w.advance(at);
          if (w.tokenTotal + tokens > tpm) {
            end(false, 0);
            const message =
              tokens > tpm
                ? `This request needs up to ${tokens} tokens (prompt + max_tokens), above this key's limit of ${tpm} tokens per minute. Lower max_tokens or shorten the prompt.`
                : `Rate limit reached: ${tpm} tokens per minute for this key (${w.tokenTotal} in use, this request needs up to ${tokens}).`;
            refuse(message, tokens > tpm ? WINDOW_MS : w.tokensFreeIn(tokens, tpm, at));
          }
        }
        reserved = tokens;
        w.add(sec, 0, tokens);
        describe(0, state.active, 0);
      },
      settle: (actual) => end(true, actual),
      cancel: () => end(false, 0),
    };
  }

  /**
   * Admits a token count (`/v1/tokens/count`) against its own rate: rpm × countRpmFactor a minute for a key with
   * an rpm; unlimited otherwise. Returns its x-ratelimit-*-counts headers; throws a 429 when over.
   */
  admitCount(p: Principal, now = Date.now()): Record<string, string> {
    const headers: Record<string, string> = {};
    if (p.limits.rpm === null) return headers;
    const limit = p.limits.rpm * this.countRpmFactor;
    const w = this.state(p)!.counts;
    const sec = w.advance(now);
    const full = w.requestTotal >= limit;
    if (!full) w.add(sec, 1, 0);
    headers["x-ratelimit-limit-counts"] = String(limit);
    headers["x-ratelimit-remaining-counts"] = String(Math.max(0, limit - w.requestTotal));
    headers["x-ratelimit-reset-counts"] = resetIn(w.requestTotal >= limit ? w.requestsFreeIn(now) : 0);
    if (full) {
      throw errors.rateLimited(
        `Rate limit reached: ${limit} token counts per minute for this key.`,
        retryAfter(w.requestsFreeIn(now)),
        { ...headers },
      );
    }
    return headers;
  }
}
