import type { Principal } from "../server/auth.js";
import { ApiError } from "../server/errors.js";

const WINDOW_MS = 60_000;

interface Spend {
  at: number;
  tokens: number;
}

interface KeyState {
  /** Admissions in the last minute, oldest first. */
  spends: Spend[];
  active: number;
}

/** A request let in: settle it with the tokens it really used, or cancel it if it never ran. */
export interface Admission {
  /** x-ratelimit-* headers for the response. */
  readonly headers: Record<string, string>;
  settle(actualTokens: number): void;
  /** Undoes the admission entirely: a request refused after admission spends no quota. */
  cancel(): void;
}

/** OpenAI's reset format: "1s", "6m0s", "0.5s". */
function resetIn(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${Math.round(s * 10) / 10}s`;
  return `${Math.floor(s / 60)}m${Math.round(s % 60)}s`;
}

/**
 * Per-key limits over a sliding minute: requests per minute, tokens per minute (prompt + completion: the
 * prompt and the most the answer may take are reserved at admission and settled to the real count at the
 * end), and requests at once. Concurrency contract: `admit` is synchronous and runs on the event loop, so
 * checking and reserving are one atomic step: N simultaneous requests against a limit of N admit exactly N.
 */
export class RateLimiter {
  private readonly keys = new Map<string, KeyState>();

  admit(p: Principal, reserveTokens: number, now = Date.now()): Admission {
    const { rpm, tpm, concurrency } = p.limits;
    let state = this.keys.get(p.keyId);
    if (!state) {
      state = { spends: [], active: 0 };
      this.keys.set(p.keyId, state);
    }
    const spends = state.spends;
    while (spends.length > 0 && spends[0].at <= now - WINDOW_MS) spends.shift();
    const used = spends.reduce((n, s) => n + s.tokens, 0);

    const headers: Record<string, string> = {};
    const reqReset = spends.length > 0 ? spends[0].at + WINDOW_MS - now : 0;
    if (rpm !== null) {
      headers["x-ratelimit-limit-requests"] = String(rpm);
      headers["x-ratelimit-remaining-requests"] = String(Math.max(0, rpm - spends.length - 1));
      headers["x-ratelimit-reset-requests"] = resetIn(spends.length + 1 >= rpm ? reqReset || WINDOW_MS : 0);
    }
    if (tpm !== null) {
      headers["x-ratelimit-limit-tokens"] = String(tpm);
      headers["x-ratelimit-remaining-tokens"] = String(Math.max(0, tpm - used - reserveTokens));
      headers["x-ratelimit-reset-tokens"] = resetIn(this.tokensFreeIn(spends, used, reserveTokens, tpm, now));
    }

    const refuse = (message: string, retryMs: number): never => {
      if (rpm !== null) headers["x-ratelimit-remaining-requests"] = String(Math.max(0, rpm - spends.length));
      if (tpm !== null) headers["x-ratelimit-remaining-tokens"] = String(Math.max(0, tpm - used));
      throw new ApiError(429, "rate_limit_error", message, null, {
        ...headers,
        "retry-after": String(Math.max(1, Math.ceil(retryMs / 1000))),
      });
    };
    if (concurrency !== null && state.active >= concurrency) {
      refuse(`Too many requests at once for this key (limit ${concurrency}). Retry when one finishes.`, 1000);
    }
    if (rpm !== null && spends.length >= rpm) {
      refuse(`Rate limit reached: ${rpm} requests per minute for this key.`, reqReset);
    }
    if (tpm !== null && used + reserveTokens > tpm) {
      const message =
        reserveTokens > tpm
          ? `This request needs up to ${reserveTokens} tokens (prompt + max_tokens), above this key's limit of ${tpm} tokens per minute. Lower max_tokens or shorten the prompt.`
          : `Rate limit reached: ${tpm} tokens per minute for this key (${used} in use, this request needs up to ${reserveTokens}).`;
      refuse(message, reserveTokens > tpm ? WINDOW_MS : this.tokensFreeIn(spends, used, reserveTokens, tpm, now));
    }

    const spend: Spend = { at: now, tokens: reserveTokens };
    spends.push(spend);
    state.active++;
    let done = false;
    const s = state;
    return {
      headers,
      settle: (actual) => {
        if (done) return;
        done = true;
        s.active--;
        spend.tokens = actual;
      },
      cancel: () => {
        if (done) return;
        done = true;
        s.active--;
        const i = s.spends.indexOf(spend);
        if (i !== -1) s.spends.splice(i, 1);
      },
    };
  }

  /** How long until enough of the minute's tokens expire for `need` more to fit. */
  private tokensFreeIn(spends: Spend[], used: number, need: number, tpm: number, now: number): number {
    let over = used + need - tpm;
    if (over <= 0) return 0;
    for (const s of spends) {
      over -= s.tokens;
      if (over <= 0) return s.at + WINDOW_MS - now;
    }
    return WINDOW_MS;
  }
}
