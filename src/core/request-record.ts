/** What the server tells its observers (log, metrics, ledger) about each request: never a key, a prompt or a completion. */

/** What one completion did, for the request record (no text: never prompts or completions). */
export interface CompletionSummary {
  model: string;
  stream: boolean;
  promptTokens: number;
  completionTokens: number;
  /** stop, length, cancelled (client disconnected), error, shutdown, key_revoked, or null when generation never began. */
  finishReason: string | null;
  ttftMs: number | null;
}

export interface RequestRecord {
  requestId: string;
  method: string;
  /** The matched route pattern, or null for a 404. */
  route: string | null;
  status: number;
  durationMs: number;
  keyId: string | null;
  /** The client went away before the response was complete. */
  aborted: boolean;
  /** Set when the request reached a model for a completion. */
  completion: CompletionSummary | null;
}
