/**
 * The engine's scheduler: decides what each decode step of one context holds, against a token budget, as vLLM's
 * chunked prefill and Sarathi-Serve do. Every sequence due a token gets it in the step; prompt chunks fill the rest
 * of the step's budget, first come first served; the budget is sized from the measured cost of past steps so that
 * a step, and so the time between two tokens of a stream, stays near a target.
 *
 * Why steps are gated at all: node-llama-cpp batches whatever decodes are queued when it starts a step, and starts
 * the next step as soon as one is queued. After a step, the sequences ask for their next token one after another;
 * the first one asks before the others and is decoded alone, the others are decoded alone next, and the streams
 * end up taking turns instead of sharing steps (measured on the bench model, 2 streams: 94 of 95 steps held one
 * sequence, and 54 tok/s in all against 77 when both share each step). A prompt handed to node-llama-cpp whole
 * is worse: its chunks run back to back, and a streaming sequence gets a token between two of them at best.
 *
 * So every sequence of the context is a member from the moment it has its lease, and asks for each of its steps
 * here (`arrive`), saying where it is:
 * - `prompt`: evaluating its prompt, with `remaining` tokens to go, the last one included (a step given them all
 *   gives its first generated token, from the last one's logits);
 * - `start`: its prompt is in but for the last token (one to go, its first generated token due);
 * - `stream`: generating, its previous token sent.
 * A member that arrives waits until no member's step is still running; the members that are ready then go
 * together, in ascending `order` (the sequence id: llama.cpp puts only consecutive, ascending sequence ids into
 * one micro-batch when each sequence has its own KV cache, llama_batch_allocr::split_equal):
 * - when every member has arrived, at once;
 * - else on the next turn of the event loop (`setImmediate`), so a member whose answer is still being written
 *   (waiting for a socket to drain) never holds the others back; it joins the step after.
 *
 * The budget of a step:
 * - Every `start` and `stream` member that is ready goes, one token each: no stream ever waits for a prompt.
 * - While no member streams or starts, prompts fill the whole step (`promptTokens`): nobody's next token is waiting,
 *   and prompts are evaluated fastest in large steps.
 * - Otherwise prompts get the tokens that fit the step's allowance: (allowance − the measured cost of a step of
 *   that many tokens without prompt) ÷ the measured cost of a prompt token, never fewer than `minPromptTokens`
 *   (so prompts are never starved, however many streams there are) nor more than `promptTokens`. Until a
 *   prompt step has been measured, `minPromptTokens`.
 * - The allowance keeps every stream's time per output token under `targetStepMs`, as a mean over any
 *   TPOT_WINDOW consecutive tokens (the measure users and benchmarks judge a stream by: vLLM's TPOT): a stream
 *   whose tokens come faster than the target has time in hand, and a step may spend part of it (SLACK_SHARE) on
 *   prompts; a stream that fell behind gets shorter steps until it is back. A stream younger than the window
 *   counts its tokens still to come at the measured cost of a step without prompt, so an arrival beside a stream
 *   that has just started is not held to the target either. A sequence whose first token is due (`start`)
 *   allows `targetStepMs`. The longest pause a stream sees is a step of `promptTokens` prompt tokens.
 *   So prompts go in large steps, as they would with nobody streaming (prompt tokens cost a CPU far less than
 *   decode steps: bench model, zen4, 2 threads: 5.4 ms a prompt token in a 256-token chunk, 7 in a 32-token
 *   one, against 20 ms for a step of one stream and 141 for eight), until a stream's mean nears the target.
 * - Prompts share their tokens first come, first served: the prompt that arrived first gets all it can use, then
 *   the next. That gives the earliest request its first token soonest, and keeps the number of sequences with
 *   prompt tokens in a step, and so llama.cpp's micro-batches, small (each distinct chunk length is one more).
 *
 * The costs are learned from the steps themselves (the time from a step's release until its last member has its
 * result, event loop included): a step with no prompt tokens gives the cost of a step of that many tokens; a step
 * with prompt tokens gives the cost of a prompt token, after the cost of its other tokens. Both are moving averages,
 * so they follow the machine (another process taking a core, say).
 */
export interface StepGateOptions {
  /** Most prompt tokens in one step (the context's batch has room for these and one token per sequence). */
  promptTokens: number;
  /** While any member streams, steps are sized to take about this long (ms): the time per output token kept. */
  targetStepMs: number;
  /** Fewest prompt tokens a step holds, beside any number of streams, while prompts wait. */
  minPromptTokens: number;
  /** The clock (ms); tests pass a simulated one. */
  now?: () => number;
}

export type Phase = { kind: "prompt"; remaining: number } | { kind: "start" } | { kind: "stream" };

interface Waiting {
  order: number;
  /** Its place among the members joined so far: prompts are served in this order. */
  since: number;
  phase: Phase;
  release: (promptTokens: number) => void;
}

/** What the gate has measured so far. */
export interface StepCosts {
  /** Steps released. */
  steps: number;
  /** Moving average of a step's time by its count of tokens, for steps without prompt tokens (ms). */
  decodeMs: Record<number, number>;
  /** Moving average of the time a prompt token adds to a step (ms), or null before any prompt step came back. */
  promptTokenMs: number | null;
  /** The prompt tokens the last step beside streams was given. */
  lastPromptBudget: number | null;
}

/** Large enough that the gate's own tests need no options; the engine passes its own. */
const DEFAULTS: StepGateOptions = { promptTokens: 128, targetStepMs: 250, minPromptTokens: 16 };

/** Weight of the newest step in the moving averages: a few steps follow a change, one odd step moves little. */
const SMOOTHING = 0.25;

const smooth = (old: number | undefined, sample: number) =>
  old === undefined ? sample : old + SMOOTHING * (sample - old);

/** Tokens over which a stream's mean time per token is kept under the target. */
export const TPOT_WINDOW = 32;

/**
 * The share of a stream's time in hand that one step may spend: the rest absorbs the error of the cost estimate
 * (a prompt token costs more as the context fills), so that the mean stays under the target, not at it.
 */
const SLACK_SHARE = 0.75;

/** When a stream's last tokens came (its first token first), at most TPOT_WINDOW + 1 of them. */
interface StreamClock {
  times: number[];
}

export class StepGate {
  private readonly opts: Required<StepGateOptions>;
  private members = 0;
  private inStep = 0;
  /** Members joined so far. */
  private joined = 0;
  private waiting: Waiting[] = [];
  private openScheduled = false;
  private openQueued = false;
  /** The step running: when it was released, its tokens due (starts and streams), its prompt tokens. */
  private current?: { at: number; decodes: number; prompt: number };
  private readonly decodeMs = new Map<number, number>();
  private promptTokenMs?: number;
  private lastPromptBudget: number | null = null;
  private steps = 0;
  /** The clocks of the members that stream: from the step that gives their first token until they leave. */
  private readonly clocks = new Set<StreamClock>();

  constructor(opts: Partial<StepGateOptions> = {}) {
    this.opts = { now: () => performance.now(), ...DEFAULTS, ...opts };
    if (this.opts.minPromptTokens < 1) throw new RangeError("a step needs room for at least one prompt token");
    if (this.opts.promptTokens < this.opts.minPromptTokens)
      throw new RangeError("promptTokens is below minPromptTokens");
  }

  /** A sequence has its lease: it is a member until it leaves, and asks for each of its steps here. */
  join(order: number): Member {
    this.members++;
    const since = ++this.joined;
    let state: "processing" | "waiting" | "stepping" | "gone" = "processing";
    const clock: StreamClock = { times: [] };
    let entry: Waiting | undefined;
    return {
      arrive: (phase: Phase = { kind: "stream" }) =>
        new Promise<number>((resolve, reject) => {
          if (state !== "processing") return reject(new Error(`arrive while ${state}`));
          if (phase.kind === "prompt" && phase.remaining < 1)
            return reject(new RangeError("a prompt step needs a token to evaluate"));
          state = "waiting";
          entry = {
            order,
            since,
            phase,
            release: (promptTokens) => {
              state = "stepping";
              this.inStep++;
              // From the step that gives its first token on, its next token is always due: it streams.
              if (phase.kind !== "prompt" || promptTokens >= phase.remaining) this.clocks.add(clock);
              resolve(promptTokens);
            },
          };
          this.waiting.push(entry);
          this.maybeOpen();
        }),
      received: () => {
        if (state !== "stepping") return;
        state = "processing";
        if (this.clocks.has(clock)) {
          clock.times.push(this.opts.now());
          if (clock.times.length > TPOT_WINDOW + 1) clock.times.shift();
        }
        this.stepped();
      },
      leave: () => {
        if (state === "gone") return;
        if (state === "waiting") this.waiting = this.waiting.filter((e) => e !== entry);
        this.clocks.delete(clock);
        const wasStepping = state === "stepping";
        state = "gone";
        this.members--;
        if (wasStepping) this.stepped();
        else this.maybeOpen();
      },
    };
  }

  get targetStepMs(): number {
    return this.opts.targetStepMs;
  }

  /** For tests and stats: members, how many of them stream, wait or are in a step. */
  snapshot(): { members: number; streaming: number; waiting: number; inStep: number } {
    return { members: this.members, streaming: this.clocks.size, waiting: this.waiting.length, inStep: this.inStep };
  }

  costs(): StepCosts {
    return {
      steps: this.steps,
      decodeMs: Object.fromEntries([...this.decodeMs].sort((a, b) => a[0] - b[0])),
      promptTokenMs: this.promptTokenMs ?? null,
      lastPromptBudget: this.lastPromptBudget,
    };
  }

  /** A member of the running step has its result (or left): the step is over when none is left in it. */
  private stepped(): void {
    this.inStep--;
    if (this.inStep === 0 && this.current) {
      this.learn(this.current, this.opts.now() - this.current.at);
      this.current = undefined;
    }
    this.maybeOpen();
  }

  private learn(step: { decodes: number; prompt: number }, ms: number): void {
    if (step.prompt === 0) {
      if (step.decodes > 0) this.decodeMs.set(step.decodes, smooth(this.decodeMs.get(step.decodes), ms));
      return;
    }
    const others = step.decodes > 0 ? this.decodeCost(step.decodes) : 0;
    this.promptTokenMs = smooth(this.promptTokenMs, Math.max(0, ms - others) / step.prompt);
  }

  /**
   * The cost of a step of `n` tokens without prompt: measured for `n`, else drawn through the two measured counts
   * nearest (a step's cost grows about linearly with its tokens), else the one measured, else 0.
   */
  private decodeCost(n: number): number {
    const known = this.decodeMs.get(n);
    if (known !== undefined) return known;
    const counts = [...this.decodeMs.keys()].sort((a, b) => Math.abs(a - n) - Math.abs(b - n) || a - b);
    const a = counts[0];
    const b = counts[1];
    if (a === undefined) return 0;
    const ca = this.decodeMs.get(a)!;
    if (b === undefined) return ca;
    const cb = this.decodeMs.get(b)!;
    return Math.max(0, ca + ((cb - ca) / (b - a)) * (n - a));
  }

  /**
   * How long a step may take (ms) with every stream's mean time per token over its last TPOT_WINDOW tokens, this
   * step's included, kept under the target; `targetStepMs` when a member's first token is due in it.
   */
  private allowance(starts: boolean): number {
    const target = this.opts.targetStepMs;
    const now = this.opts.now();
    let allowed = starts ? target : Infinity;
    const upcoming = this.decodeCost(Math.max(1, this.clocks.size));
    for (const { times } of this.clocks) {
      // The window of W gaps that ends with this step's token: from times[L - W] when the stream has that many;
      // for a younger stream, its first W gaps, those still to come counted at the measured cost of a step
      // without prompt (a later step that finds them slower is held back by the window it then sees).
      const from = times[Math.max(0, times.length - TPOT_WINDOW)];
      if (from === undefined) {
        allowed = Math.min(allowed, target); // no times: its first step has not come back (it left the step early)
        continue;
      }
      const young = Math.max(0, TPOT_WINDOW - times.length);
      const room = target * TPOT_WINDOW - young * upcoming - (now - from);
      allowed = Math.min(allowed, room > target ? target + SLACK_SHARE * (room - target) : room);
    }
    return allowed === Infinity ? target : allowed;
  }

  /** Prompt tokens for a step with `decodes` tokens due that may take `allowanceMs`, while someone streams or starts. */
  private promptBudget(decodes: number, allowanceMs: number): number {
    const floor = this.opts.minPromptTokens;
    if (this.promptTokenMs === undefined) return floor;
    const fit = Math.floor((allowanceMs - this.decodeCost(Math.max(1, decodes))) / Math.max(this.promptTokenMs, 1e-3));
    return Math.min(this.opts.promptTokens, Math.max(floor, fit));
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
    const decodes = ready.filter((e) => e.phase.kind !== "prompt").length;
    const prompts = ready.filter((e) => e.phase.kind === "prompt").sort((a, b) => a.since - b.since);
    const protect = decodes > 0 || this.clocks.size > 0;
    const starts = ready.some((e) => e.phase.kind === "start");
    let budget = protect ? this.promptBudget(decodes, this.allowance(starts)) : this.opts.promptTokens;
    if (protect && prompts.length > 0) this.lastPromptBudget = budget;

    const shares = new Map<Waiting, number>();
    for (const e of prompts) {
      if (budget === 0) break;
      const n = Math.min(budget, e.phase.kind === "prompt" ? e.phase.remaining : 0);
      shares.set(e, n);
      budget -= n;
    }

    const go: Array<[Waiting, number]> = [];
    this.waiting = [];
    let prompt = 0;
    for (const e of ready) {
      if (e.phase.kind !== "prompt") go.push([e, 0]);
      else if (shares.has(e)) {
        go.push([e, shares.get(e)!]);
        prompt += shares.get(e)!;
      } else this.waiting.push(e); // no room left in this step: the next one
    }
    this.steps++;
    this.current = { at: this.opts.now(), decodes, prompt };
    for (const [e, n] of go) e.release(n);
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
