/** Tells whether a key may still be used: revoked or expired keys may not. */
export type KeyCheck = (keyId: string) => boolean;

interface Watched {
  readonly keyId: string;
  readonly onEnded: () => void;
}

/** How often the keys of running generations are checked: a revocation ends them within this time. */
export const KEY_CHECK_MS = 1000;

/**
 * Ends running generations whose key has been revoked or has expired since they began, wherever the revocation
 * was made (the admin API, the CLI, another process sharing the key store). While any generation is watched, each
 * distinct key is checked once every KEY_CHECK_MS (one indexed SQLite read); with none, no timer runs.
 * Concurrency contract: everything runs on the event loop; `onEnded` is called at most once per watch.
 */
export class KeyWatch {
  private readonly watched = new Set<Watched>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly usable: KeyCheck,
    private readonly intervalMs = KEY_CHECK_MS,
  ) {}

  /** Watches one generation's key; the returned function stops watching it. */
  watch(keyId: string, onEnded: () => void): () => void {
    const w: Watched = { keyId, onEnded };
    this.watched.add(w);
    this.timer ??= setInterval(() => this.check(), this.intervalMs).unref();
    return () => this.unwatch(w);
  }

  private unwatch(w: Watched): void {
    this.watched.delete(w);
    if (this.watched.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** Checks every watched key once; ends the generations of those no longer usable. */
  check(): void {
    const verdict = new Map<string, boolean>();
    for (const w of [...this.watched]) {
      let ok = verdict.get(w.keyId);
      if (ok === undefined) {
        ok = this.usable(w.keyId);
        verdict.set(w.keyId, ok);
      }
      if (!ok) {
        this.unwatch(w);
        w.onEnded();
      }
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.watched.clear();
  }
}
