/**
 * Keeps the generating sequences of one context decoding in the same steps.
 *
 * node-llama-cpp batches whatever decodes are queued when it starts a step, and starts the next step as soon as
 * one is queued. After a step, the sequences ask for their next token one after another; the first one asks
 * before the others and is decoded alone, the others are decoded alone next, and the streams end up taking
 * turns instead of sharing steps (measured on the bench model, 2 streams: 94 of 95 steps held one sequence, and
 * 54 tok/s in all against 77 when both share each step).
 *
 * So a sequence that has its token and wants the next one waits here (`arrive`) until no member's step is still
 * running, and the members that are ready then ask together:
 * - when every member has arrived, at once;
 * - else on the next turn of the event loop (`setImmediate`), so a member whose answer is still being written
 *   (waiting for a socket to drain) never holds the others back; it joins the step after.
 * A sequence becomes a member with its first generated token: prompts are evaluated by node-llama-cpp in
 * batch_size chunks with the members' tokens beside them, and no member waits for a prompt.
 */
export class StepGate {
  private members = 0;
  private inStep = 0;
  private waiting: Array<{ order: number; release: () => void }> = [];
  private openScheduled = false;
  private openQueued = false;

  /**
   * A sequence's generation has its first token (its prompt is evaluated): it is a member from now on. Members
   * ask in ascending `order` (the sequence id): llama.cpp puts only consecutive, ascending sequence ids into one
   * micro-batch when each sequence has its own KV cache (llama_batch_allocr::split_equal).
   */
  join(order: number): Member {
    this.members++;
    let state: "processing" | "waiting" | "stepping" | "gone" = "processing";
    let entry: { order: number; release: () => void } | undefined;
    return {
      arrive: () =>
        new Promise<void>((resolve, reject) => {
          if (state !== "processing") return reject(new Error(`arrive while ${state}`));
          state = "waiting";
          entry = {
            order,
            release: () => {
              state = "stepping";
              this.inStep++;
              resolve();
            },
          };
          this.waiting.push(entry);
          this.maybeOpen();
        }),
      received: () => {
        if (state !== "stepping") return;
        state = "processing";
        this.inStep--;
        this.maybeOpen();
      },
      leave: () => {
        if (state === "gone") return;
        if (state === "stepping") this.inStep--;
        if (state === "waiting") this.waiting = this.waiting.filter((e) => e !== entry);
        state = "gone";
        this.members--;
        this.maybeOpen();
      },
    };
  }

  /** For tests and stats: members, and how many of them wait or are in a step. */
  snapshot(): { members: number; waiting: number; inStep: number } {
    return { members: this.members, waiting: this.waiting.length, inStep: this.inStep };
  }

  private maybeOpen(): void {
    if (this.waiting.length === 0 || this.inStep > 0) return;
    if (this.waiting.length === this.members) {
      // In a microtask, not at once: the member arriving last is still inside arrive(), and its await must be
      // in place before the release, or it would ask last whatever its order.
      if (this.openQueued) return;
      this.openQueued = true;
      queueMicrotask(() => {
        this.openQueued = false;
        this.openIfReady();
      });
      return;
    }
    if (this.openScheduled) return;
    this.openScheduled = true;
    setImmediate(() => {
      this.openScheduled = false;
      this.openIfReady();
    });
  }

  /** A deferred open: a member may have stepped or left in between. */
  private openIfReady(): void {
    if (this.inStep === 0 && this.waiting.length > 0) this.open();
  }

  private open(): void {
    const go = this.waiting.sort((a, b) => a.order - b.order);
    this.waiting = [];
    for (const e of go) e.release();
  }
}

export interface Member {
  /** Has its token and wants the next: resolves when it may ask for it (it is then in a step). */
  arrive(): Promise<void>;
  /** Its step's token came back. */
  received(): void;
  /** Its generation ended (finished, stopped or cancelled). */
  leave(): void;
}
