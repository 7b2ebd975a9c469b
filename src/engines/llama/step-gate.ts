/**
 * Decides what each decode step of one context holds: which sequences take part, and how many prompt tokens each
 * prompt being evaluated puts in.
 *
 * Why steps are gated at all: node-llama-cpp batches whatever decodes are queued when it starts a step, and starts
 * the next step as soon as one is queued. After a step, the sequences ask for their next token one after another;
 * the first one asks before the others and is decoded alone, the others are decoded alone next, and the streams
 * end up taking turns instead of sharing steps (measured on the bench model, 2 streams: 94 of 95 steps held one
 * sequence, and 54 tok/s in all against 77 when both share each step). A prompt handed to node-llama-cpp whole
 * is worse: its chunks run back to back, and a streaming sequence, still busy with its last token when the next
 * chunk starts, gets a token every other step.
 *
 * So every sequence of the context is a member from the moment it has its lease, and asks for each of its steps
 * here (`arrive`), saying where it is:
 * - `prompt`: evaluating its prompt, with `remaining` tokens to go before the last one;
 * - `start`: its prompt is in but for the last token, whose evaluation gives the first generated token;
 * - `stream`: generating, its previous token sent.
 * A member that arrives waits until no member's step is still running; the members that are ready then go
 * together, in ascending `order` (the sequence id: llama.cpp puts only consecutive, ascending sequence ids into
 * one micro-batch when each sequence has its own KV cache, llama_batch_allocr::split_equal):
 * - when every member has arrived, at once;
 * - else on the next turn of the event loop (`setImmediate`), so a member whose answer is still being written
 *   (waiting for a socket to drain) never holds the others back; it joins the step after.
 *
 * Prompt tokens per step:
 * - while no member streams, up to `promptTokens` in all (prompts are evaluated fastest in large steps);
 * - beside streaming members, up to `streamingPromptTokens` in all. On a CPU, with a KV cache per sequence, a
 *   step that holds prompt tokens beside the streams' tokens is split in two micro-batches and costs about two
 *   decode steps plus the prompt tokens: small prompt chunks keep the streams' inter-token time steady, at the cost
 *   of a slower first token for the request that arrived while others stream.
 * Prompts evaluated in the same step share its prompt tokens equally (what one cannot use goes to the others).
 *
 * Starting together: when no member streams yet and the prompts that were being evaluated when a member became
 * ready to start are still being evaluated, with at most `holdTokens` left between them, the member waits for them,
 * and they start streaming in the same step (prompts that arrive later never hold it). That is what happens when
 * several requests arrive at once: the first prompt is in a step before the others arrive, and, were it to start
 * streaming at once, every step of the other prompts would fall between two of its tokens. Waiting costs the first
 * request a later first token (the time to evaluate the others' prompts, bounded by `holdTokens`), and no streaming
 * sequence ever waits for a prompt.
 */
export interface StepGateOptions {
  /** Most prompt tokens in one step while no member streams. */
  promptTokens: number;
  /** Most prompt tokens in one step beside streaming members. */
  streamingPromptTokens: number;
  /**
   * A member ready to start waits for the prompts of the members joined before it when they have at most this
   * many tokens left.
   */
  holdTokens: number;
}

export type Phase = { kind: "prompt"; remaining: number } | { kind: "start" } | { kind: "stream" };

interface Waiting {
  order: number;
  phase: Phase;
  /** For a start: the count of members joined when it became ready; members that join later never hold it. */
  readyAt: number;
  release: (promptTokens: number) => void;
}

/** What the gate knows of a member whose prompt is not in yet. */
interface Prompting {
  /** Its place among the members joined so far. */
  since: number;
  /** Prompt tokens it has left to evaluate (at most). */
  remaining: number;
}

/** Large enough that the gate's own tests need no options; the engine passes its own. */
const DEFAULTS: StepGateOptions = { promptTokens: 128, streamingPromptTokens: 16, holdTokens: 1024 };

export class StepGate {
  private readonly opts: StepGateOptions;
  private members = 0;
  /** Members that have sent a generated token and not left. */
  private streaming = 0;
  private inStep = 0;
  /** Members joined so far. */
  private joined = 0;
  /** Members still evaluating their prompts, whether they are waiting here or busy elsewhere. */
  private readonly prompting = new Set<Prompting>();
  private waiting: Waiting[] = [];
  private openScheduled = false;
  private openQueued = false;

  constructor(opts: Partial<StepGateOptions> = {}) {
    this.opts = { ...DEFAULTS, ...opts };
    if (this.opts.promptTokens < 1 || this.opts.streamingPromptTokens < 1) throw new RangeError("a step needs room for at least one prompt token");
  }

  /**
   * A sequence has its lease, with `promptTokens` at most to evaluate: it is a member until it leaves, and asks
   * for each of its steps here.
   */
  join(order: number, promptTokens = 0): Member {
    this.members++;
    const prompting: Prompting = { since: ++this.joined, remaining: promptTokens };
    if (promptTokens > 0) this.prompting.add(prompting);
    let state: "processing" | "waiting" | "stepping" | "gone" = "processing";
    let streams = false;
    let readyAt: number | undefined;
    let entry: Waiting | undefined;
    return {
      arrive: (phase: Phase = { kind: "stream" }) =>
        new Promise<number>((resolve, reject) => {
          if (state !== "processing") return reject(new Error(`arrive while ${state}`));
          if (phase.kind === "prompt" && phase.remaining < 1) return reject(new RangeError("a prompt step needs a token to evaluate"));
          state = "waiting";
          if (phase.kind === "stream" && !streams) {
            streams = true;
            this.streaming++;
          }
          if (phase.kind === "prompt") {
            prompting.remaining = phase.remaining;
            this.prompting.add(prompting);
          } else {
            this.prompting.delete(prompting);
          }
          if (phase.kind === "start") readyAt ??= this.joined;
          entry = {
            order,
            phase,
            readyAt: readyAt ?? 0,
            release: (promptTokens) => {
              state = "stepping";
              this.inStep++;
              resolve(promptTokens);
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
        if (streams) this.streaming--;
        this.prompting.delete(prompting);
        state = "gone";
        this.members--;
        this.maybeOpen();
      },
    };
  }

  /** For tests and stats: members, how many of them stream, wait or are in a step. */
  snapshot(): { members: number; streaming: number; waiting: number; inStep: number } {
    return { members: this.members, streaming: this.streaming, waiting: this.waiting.length, inStep: this.inStep };
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
    const ready = this.waiting.sort((a, b) => a.order - b.order);
    const prompts = ready.filter((e) => e.phase.kind === "prompt");
    // A start waits while no one streams and the members that had joined when it became ready are still
    // evaluating their prompts (waiting here, or busy elsewhere, such as erasing what their sequence held), if
    // they have few enough tokens left between them.
    const held = (start: Waiting): boolean => {
      if (this.streaming > 0) return false;
      let left = 0;
      for (const p of this.prompting) if (p.since <= start.readyAt) left += p.remaining;
      return left > 0 && left <= this.opts.holdTokens;
    };
    const shares = this.share(prompts, this.streaming === 0 ? this.opts.promptTokens : this.opts.streamingPromptTokens);

    const go: Array<[Waiting, number]> = [];
    this.waiting = [];
    for (const e of ready) {
      if (e.phase.kind === "prompt") {
        const n = shares.get(e) ?? 0;
        if (n > 0) go.push([e, n]);
        else this.waiting.push(e); // more prompts than room in this step: the next one
      } else if (e.phase.kind === "start" && held(e)) {
        this.waiting.push(e);
      } else {
        go.push([e, 0]);
      }
    }
    for (const [e, n] of go) e.release(n);
  }

  /** `budget` prompt tokens shared equally between the prompts; what one cannot use goes to the others, in order. */
  private share(prompts: Waiting[], budget: number): Map<Waiting, number> {
    const shares = new Map<Waiting, number>();
    let open = prompts.slice();
    let left = budget;
    while (open.length > 0 && left > 0) {
      const each = Math.max(1, Math.floor(left / open.length));
      const next: Waiting[] = [];
      for (const e of open) {
        if (left === 0) break;
        const want = (e.phase.kind === "prompt" ? e.phase.remaining : 0) - (shares.get(e) ?? 0);
        const n = Math.min(want, each, left);
        shares.set(e, (shares.get(e) ?? 0) + n);
        left -= n;
        if (n < want) next.push(e);
      }
      open = next;
    }
    return shares;
  }
}

export interface Member {
  /**
   * Ready for its next step, in `phase` (a generating sequence's next token by default): resolves when it may
   * go (it is then in a step), with how many prompt tokens to evaluate in a `prompt` step (0 otherwise).
   */
  arrive(phase?: Phase): Promise<number>;
  /** Its step came back. */
  received(): void;
  /** It is done: finished, stopped or cancelled. */
  leave(): void;
}
