/**
 * Finds stop sequences in streamed text. Text that could still turn out to be the start of a stop sequence is
 * held back until it is decided, so a stop sequence is never sent, not even in part.
 */
export class StopMatcher {
  private held = "";
  private readonly longest: number;

  constructor(private readonly stops: readonly string[]) {
    this.longest = stops.reduce((n, s) => Math.max(n, s.length), 0);
  }

  /** Once a stop sequence was reached: the text that came after it in what was pushed. */
  after = "";

  /** Adds text; returns what may be sent now and whether a stop sequence was reached. */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.stops.length === 0) return { emit: text, stopped: false };
    const buf = this.held + text;
    let cut = -1;
    let length = 0;
    for (const s of this.stops) {
      const at = buf.indexOf(s);
      if (at !== -1 && (cut === -1 || at < cut)) [cut, length] = [at, s.length];
    }
    if (cut !== -1) {
      this.held = "";
      this.after = buf.slice(cut + length);
      return { emit: buf.slice(0, cut), stopped: true };
    }
    // Hold the longest suffix that is a prefix of some stop sequence.
    let keep = 0;
    for (let n = Math.min(this.longest - 1, buf.length); n > 0 && keep === 0; n--) {
      const tail = buf.slice(buf.length - n);
      if (this.stops.some((s) => s.startsWith(tail))) keep = n;
    }
    this.held = buf.slice(buf.length - keep);
    return { emit: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** The held text, at the end of generation (no stop sequence came). */
  flush(): string {
    const rest = this.held;
    this.held = "";
    return rest;
  }
}
