import type { EngineEvent } from "../engines/engine.js";
import { CLIENT_CLOSED_STATUS, type UsageEntry } from "../keys/ledger.js";

/** The figures a charge reads and settles: a completion's outcome (routes/chat.ts). */
export interface Charged {
  promptTokens: number;
  completionTokens: number;
  finishReason: string | null;
  ttftMs: number | null;
}

/**
 * What one completion is charged (docs/api.md, "Rate limits"): the prompt tokens evaluated and the completion tokens delivered.
 * - An answer that ended (stop, length) and was given: the engine's counts, as its usage tells the client.
 * - Otherwise (the client left, the server shut down, the generation failed): the completion tokens whose text
 *   was written to the client (none for a JSON request), and the prompt tokens the engine says it evaluated;
 *   when it does not say, the whole prompt if any text came back (the prompt was evaluated), else none.
 * Its ledger row is kept at least as far as what was delivered, and made final by `end`.
 */
export class Charge {
  private delivered = 0;
  private sawText = false;
  private promptReported = false;
  private ended = false;
  private readonly counted: number;

  constructor(
    private readonly outcome: Charged,
    private readonly entry: UsageEntry,
    /** Milliseconds since the request arrived. */
    private readonly elapsed: () => number,
  ) {
    this.counted = outcome.promptTokens;
  }

  /** Text covering `tokens` completion tokens came from the engine; `written`: it is about to go to the client. */
  text(tokens: number, written: boolean): void {
    this.sawText = true;
    if (!written) return;
    this.delivered += tokens;
    this.entry.deliver({
      promptTokens: this.counted,
      completionTokens: this.delivered,
      ttftMs: this.ttft(),
      durationMs: this.elapsed(),
    });
  }

  /** The engine's done event (already read into the outcome). */
  done(ev: Extract<EngineEvent, { type: "done" }>): void {
    this.promptReported = ev.promptTokens !== undefined;
  }

  /** Settles the outcome's counts to what is charged and commits the row; once. */
  end(how: { status: number; clientClosed: boolean }): void {
    if (this.ended) return;
    this.ended = true;
    const o = this.outcome;
    const answered =
      !how.clientClosed &&
      (o.finishReason === "stop" || o.finishReason === "length" || o.finishReason === "tool_calls");
    if (!answered) o.completionTokens = this.delivered;
    if (!this.promptReported && !answered && !this.sawText) o.promptTokens = 0;
    this.entry.end({
      promptTokens: o.promptTokens,
      completionTokens: o.completionTokens,
      ttftMs: this.ttft(),
      durationMs: this.elapsed(),
      status: how.clientClosed ? CLIENT_CLOSED_STATUS : how.status,
      state: how.clientClosed ? "client_closed" : "complete",
      finishReason: o.finishReason,
    });
  }

  private ttft(): number | null {
    return this.outcome.ttftMs === null ? null : Math.round(this.outcome.ttftMs * 10) / 10;
  }
}
