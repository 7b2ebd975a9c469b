import type { Logger } from "../observability/log.js";
import type { RequestObserver } from "../server/app.js";
import type { KeyStore } from "./store.js";

/**
 * The usage ledger: one durable row per request that reached a model (streamed, JSON, cut by the client or
 * failed mid-way), with the tokens actually produced. Written synchronously when the request is over, so a
 * row is committed before the next event is handled. A failed write is logged with the request id and the
 * counts, so the record can still be recovered from the log.
 */
export function usageLedger(store: KeyStore, log: Logger): RequestObserver {
  return (r) => {
    const c = r.completion;
    if (!c) return;
    const row = {
      requestId: r.requestId,
      keyId: r.keyId,
      model: c.model,
      promptTokens: c.promptTokens,
      completionTokens: c.completionTokens,
      status: r.status,
      finishReason: c.finishReason,
      ttftMs: c.ttftMs,
      durationMs: r.durationMs,
      stream: c.stream,
    };
    try {
      store.recordUsage(row);
    } catch (err) {
      log.error({ err, usage: row }, "usage row could not be written");
    }
  };
}
