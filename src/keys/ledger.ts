import type { Logger } from "../observability/log.js";
import type { KeyStore, UsageRow, UsageState } from "./store.js";

/**
 * How far ahead of its client a running stream's row is kept, in time: when the tokens delivered catch up with
 * the row, it is committed for about this long of further tokens at the stream's rate so far. A stream's row is
 * thus written about once a second while it streams (more often in its first second, while its rate is being
 * learned), and a SIGKILL leaves it with at least what its client received and at most about a second more.
 * One such commit (WAL, synchronous=NORMAL) holds the event loop about 0.04 ms (2 shared cores: 38–44 us an
 * update, 54–58 us an insert); one a token would be ~1.5 ms a second per 40-token/s stream, one a second is noise.
 */
export const LEDGER_AHEAD_MS = 1000;

/** nginx's "client closed request": the status of a row whose client went away (never sent on the wire). */
export const CLIENT_CLOSED_STATUS = 499;

/** What a request has used so far. */
export interface UsageCounts {
  promptTokens: number;
  completionTokens: number;
  ttftMs: number | null;
  durationMs: number;
}

/** How a request ended: the row's final figures. */
export interface UsageEnd extends UsageCounts {
  status: number;
  state: Exclude<UsageState, "in_progress">;
  finishReason: string | null;
}

/** One request's row, open from the moment the request reaches its model. */
export interface UsageEntry {
  /**
   * Called before text goes to the client, with the counts the client will have received once it is written.
   * The row is committed with at least these counts before this returns (and seldom more often than needed).
   */
  deliver(counts: UsageCounts): void;
  /** The final figures, committed before this returns; later calls are ignored. */
  end(final: UsageEnd): void;
}

/**
 * The usage ledger as routes see it. Concurrency contract: synchronous and on the event loop; every method returns
 * once its row is committed (or its failure logged), and never throws.
 */
export interface UsageJournal {
  open(start: {
    requestId: string;
    keyId: string | null;
    model: string;
    stream: boolean;
    maxCompletionTokens: number;
  }): UsageEntry;
}

/** A journal that keeps nothing (an app without a key store, as in route tests). */
export const NO_USAGE_JOURNAL: UsageJournal = {
  open: () => ({ deliver: () => undefined, end: () => undefined }),
};

/**
 * The durable usage ledger: one row per request that reached a model (streamed, JSON, cut by the client or
 * failed mid-way). The row is written `in_progress` when the request reaches its model, before any byte of the
 * answer; a stream's row is kept ahead of what its client received (LEDGER_AHEAD_MS); the final figures are
 * committed before a JSON answer is written, before a stream's usage chunk, or when the client has gone. A
 * failed write is logged with the request id and the counts, so the record can still be recovered from the log.
 */
export class UsageLedger implements UsageJournal {
  constructor(
    private readonly store: KeyStore,
    private readonly log: Logger,
    private readonly opts: { aheadMs?: number; now?: () => number } = {},
  ) {}

  open(start: {
    requestId: string;
    keyId: string | null;
    model: string;
    stream: boolean;
    maxCompletionTokens: number;
  }): UsageEntry {
    const now = this.opts.now ?? (() => performance.now());
    const aheadMs = this.opts.aheadMs ?? LEDGER_AHEAD_MS;
    const row: UsageRow = {
      requestId: start.requestId,
      keyId: start.keyId,
      model: start.model,
      stream: start.stream,
      promptTokens: 0,
      completionTokens: 0,
      finishReason: null,
      ttftMs: null,
      durationMs: 0,
      // A stream's headers go out with 200 right after this; a JSON request has answered nothing yet.
      status: start.stream ? 200 : 0,
      state: "in_progress",
    };
    let id: number | null = null;
    let committed = 0;
    let firstAt: number | null = null;
    let ended = false;
    const write = (counts: UsageCounts & Partial<UsageEnd>) => {
      Object.assign(row, counts);
      try {
        if (id === null) id = this.store.recordUsage(row);
        else this.store.updateUsage(id, row);
      } catch (err) {
        this.log.error({ err, usage: row }, "usage row could not be written");
      }
    };
    write({ promptTokens: 0, completionTokens: 0, ttftMs: null, durationMs: 0 });
    return {
      deliver: (counts) => {
        if (ended || (counts.completionTokens <= committed && counts.promptTokens <= row.promptTokens)) return;
        const t = now();
        firstAt ??= t;
        // The rate so far, over at least one interval: a stream's first tokens do not make it look faster than it is.
        const ahead = Math.ceil((counts.completionTokens * aheadMs) / Math.max(t - firstAt, aheadMs));
        committed = Math.max(
          counts.completionTokens,
          Math.min(counts.completionTokens + ahead, start.maxCompletionTokens),
        );
        write({ ...counts, completionTokens: committed });
      },
      end: (final) => {
        if (ended) return;
        ended = true;
        write(final);
      },
    };
  }
}
