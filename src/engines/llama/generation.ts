import { randomInt } from "node:crypto";
import {
  LlamaGrammarEvaluationState,
  TokenBias,
  type LlamaContextSequence,
  type LlamaGrammar,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import {
  SAMPLING_DEFAULTS,
  type EngineEvent,
  type FinishReason,
  type GenerateOptions,
  type TokenLogprob,
} from "../engine.js";
import { MAX_TOP_LOGPROBS, withLogprobs } from "./logprobs.js";
import { StopMatcher } from "../stop-sequences.js";
import { IncrementalDetokenizer } from "./detokenizer.js";
import type { Member } from "./step-gate.js";
import { CallReader, type ToolSyntax } from "./tool-calls.js";

/**
 * A generation that may call tools: how the model writes calls, the tools' names, and the grammar of what follows
 * the calls' trigger (tool-calls.ts). `forced` (tool_choice "required" or a named tool): the answer is calls from
 * its first token. Otherwise the model writes text until it writes the trigger; from there on the grammar holds
 * it to well-formed calls with valid arguments.
 */
export interface CallPlan {
  syntax: ToolSyntax;
  names: readonly string[];
  forced: boolean;
  /** A fresh state of the calls' grammar, for this generation. */
  startGrammar(): LlamaGrammarEvaluationState;
}

/**
 * One request's generation on one sequence, as llama.cpp's server_response_reader is one request's reader: it
 * owns what the request holds (its step-gate membership, the sampler's token iterator) from the moment it has its
 * sequence, and `dispose()` gives all of it back, whatever happened: `events()` disposes it once the generation
 * ends, and the engine again in its `finally` (a consumer that stops iterating early). The sequence itself stays
 * the engine's (the pool's lease).
 *
 * Its steps go through the step gate (step-gate.ts): the prompt in chunks the gate sizes, the chunk holding the
 * prompt's last token evaluated with generation (its logits give the first token), then one token a step.
 */
export class LlamaGeneration {
  /** The prompt tokens in the sequence for this request: the reused prefix, then each chunk evaluated. */
  private evaluated: number;
  private count = 0;
  /** Tokens whose text has been handed over (the rest is held back: an unfinished character, a possible stop). */
  private emitted = 0;
  private finish: FinishReason = "length";
  /** A stop sequence ended it (the text held back is then not part of the answer). */
  private bySequence = false;
  private readonly generated: Token[] = [];
  private readonly detok: IncrementalDetokenizer;
  private readonly stopper: StopMatcher;
  private tokens?: AsyncIterator<Token, void, void>;
  private disposed = false;
  /** Holds back text that may be the start of the calls' trigger (tools, not forced). */
  private readonly trigger: StopMatcher | null;
  /** The calls' text once the trigger came (after it), or from the start when forced; null: no calls. */
  private callText: string | null = null;
  /** The grammar state of the calls, from the trigger on (read by the sampler at each step). */
  private callState: LlamaGrammarEvaluationState | undefined;
  /** Reads the calls as they are generated. */
  private reader: CallReader | null = null;
  /** The log-probabilities of the tokens whose text is not handed over yet (when the request asked for them). */
  private readonly logprobs: TokenLogprob[] = [];

  constructor(
    private readonly model: LlamaModel,
    private readonly seq: LlamaContextSequence,
    private readonly member: Member,
    private readonly prompt: Token[],
    /** How much of the prompt the sequence already holds (kept; at least the last token is evaluated anew). */
    private readonly reuse: number,
    /** The most tokens the answer may have: the request's max_tokens, or the room left in the context. */
    private readonly limit: number,
    private readonly opts: GenerateOptions,
    /** The grammar every token must keep to (opts.format), or null for free text. */
    private readonly grammar: LlamaGrammar | null = null,
    /** Tools the answer may call, or null. */
    private readonly calls: CallPlan | null = null,
  ) {
    this.evaluated = reuse;
    this.detok = new IncrementalDetokenizer(model, calls !== null);
    this.stopper = new StopMatcher(opts.stop);
    this.trigger = calls && !calls.forced ? new StopMatcher([calls.syntax.trigger]) : null;
    if (calls?.forced) {
      this.callText = "";
      this.callState = calls.startGrammar();
      this.reader = new CallReader(calls.syntax, calls.names, false);
    }
  }

  /** The answer's events, ending with `done`. */
  async *events(): AsyncGenerator<EngineEvent, void, undefined> {
    try {
      if (await this.evaluatePrompt()) yield* this.generate();
      else this.finish = "cancelled";
    } finally {
      await this.dispose(); // out of the gate before the last events go: the other sequences' steps need not wait
    }
    // Text held back (an unfinished character, a possible start of a stop sequence) is real text unless a
    // stop sequence matched or the client is gone.
    if (this.finish !== "cancelled" && !this.bySequence) {
      const tail = this.detok.flush();
      if (this.callText !== null) yield* this.callPieces(tail);
      else {
        const { emit, stopped } = this.stopper.push(tail + (this.trigger?.flush() ?? ""));
        const rest = stopped ? emit : emit + this.stopper.flush();
        if (stopped) this.finish = "stop";
        if (rest)
          yield { type: "text", text: rest, tokens: Math.max(1, this.count - this.emitted), ...this.takeLogprobs() };
      }
    }
    if (this.reader && this.finish !== "cancelled") {
      if (this.reader.calls === 0) {
        // Nothing could be read as a call: what the model wrote is handed on as text, so nothing is lost (the
        // trigger too, which a forced answer's text holds and an auto answer's held back).
        const text = (this.calls?.forced ? "" : (this.calls?.syntax.trigger ?? "")) + (this.callText ?? "");
        if (text) yield { type: "text", text, tokens: Math.max(1, this.count - this.emitted) };
      } else if (this.finish === "stop") this.finish = "tool_calls";
    }
    yield { type: "done", finishReason: this.finish, completionTokens: this.count, promptTokens: this.evaluated };
  }

  /** More of the calls' text: the pieces of calls it completes (name, then arguments as they come). */
  private *callPieces(text: string): Generator<EngineEvent> {
    this.callText = (this.callText ?? "") + text;
    if (!this.reader || text === "") return;
    for (const piece of this.reader.push(text)) {
      this.logprobs.length = 0; // OpenAI gives log-probabilities for text, not for calls
      yield { type: "tool_call", ...piece, tokens: this.count - this.emitted };
      this.emitted = this.count;
    }
  }

  /**
   * Evaluates the prompt but for its last chunk, in the chunks the gate gives; true when the last chunk is due
   * (it is evaluated with the first token), false when cancelled first.
   */
  private async evaluatePrompt(): Promise<boolean> {
    const { seq, prompt, member, opts } = this;
    if (this.reuse < seq.nextTokenIndex)
      await seq.eraseContextTokenRanges([{ start: this.reuse, end: seq.nextTokenIndex }]);
    while (!opts.signal.aborted) {
      const left = prompt.length - this.evaluated;
      const n = await member.arrive(left === 1 ? { kind: "start" } : { kind: "prompt", remaining: left });
      if (opts.signal.aborted) break;
      if (left === 1 || n >= left) return true;
      await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(this.evaluated, this.evaluated + n));
      member.received();
      this.evaluated += n;
    }
    return false;
  }

  /** The prompt's last chunk with the first token, then one token a step, each through the gate. */
  private async *generate(): AsyncGenerator<EngineEvent, void, undefined> {
    const { opts, member, model } = this;
    const penalties = opts.presencePenalty !== 0 || opts.frequencyPenalty !== 0 || opts.repeatPenalty !== null;
    const generated = this.generated;
    // The tokens penalised: the last N of prompt and answer with a repeat penalty (llama.cpp's window), else
    // OpenAI's presence and frequency penalties over the answer alone.
    const window = opts.repeatPenalty?.lastN ?? 0;
    const prompt = this.prompt;
    const punishTokens =
      opts.repeatPenalty === null
        ? () => generated
        : window < 0
          ? () => prompt.concat(generated)
          : () =>
              generated.length >= window
                ? generated.slice(-window)
                : prompt.slice(Math.max(0, prompt.length - (window - generated.length))).concat(generated);
    const options = {
      temperature: opts.temperature,
      topK: opts.topK,
      topP: opts.topP,
      minP: opts.minP ?? SAMPLING_DEFAULTS.minP,
      // llama.cpp's server does the same for ignore_eos: the end-of-generation tokens are never sampled.
      ...(opts.ignoreEos || opts.logitBias !== null ? { tokenBias: this.bias() } : {}),
      // Each token is sampled among those the grammar allows there, and then accepted by it; once the grammar
      // is complete only an end-of-generation token is allowed.
      ...(this.grammar
        ? { grammarEvaluationState: new LlamaGrammarEvaluationState({ model, grammar: this.grammar }) }
        : this.calls
          ? { grammarEvaluationState: () => this.callState }
          : {}),
      // Without a seed, a fresh random one: node-llama-cpp's default is the current second, which gave every
      // request of that second the same "random" answer.
      seed: opts.seed ?? randomInt(2 ** 32),
      ...(penalties
        ? {
            repeatPenalty: {
              punishTokens,
              ...(window > 0 ? { maxPunishTokens: window } : {}),
              penalty: opts.repeatPenalty?.penalty ?? 1,
              presencePenalty: opts.presencePenalty,
              frequencyPenalty: opts.frequencyPenalty,
            },
          }
        : {}),
      yieldEogToken: true,
    };
    const rest = this.prompt.slice(this.evaluated);
    this.tokens =
      opts.logprobs === null
        ? this.seq.evaluate(rest, options)[Symbol.asyncIterator]()
        : withLogprobs(
            this.seq.evaluateWithMetadata(rest, { probabilities: true }, options),
            model,
            Math.min(opts.logprobs, MAX_TOP_LOGPROBS),
            (entry) => this.logprobs.push(entry),
          );
    for (let first = true; ; first = false) {
      if (!first) await member.arrive({ kind: "stream" });
      const step = await this.tokens.next();
      member.received();
      this.evaluated = this.prompt.length; // the first step evaluated the rest of the prompt
      if (step.done) return;
      const token = step.value;
      if (opts.signal.aborted) {
        this.finish = "cancelled";
        return;
      }
      this.count++;
      if (model.isEogToken(token)) {
        this.logprobs.pop(); // the end of the answer is no part of its text
        this.finish = "stop";
        return;
      }
      generated.push(token);
      let text = this.detok.push(token);
      /** What followed the trigger in this token's text, when the calls start here. */
      let afterTrigger: string | null = null;
      if (this.callText !== null) {
        yield* this.callPieces(text);
        text = "";
      } else if (text && this.trigger) {
        const t = this.trigger.push(text);
        text = t.emit;
        if (t.stopped) {
          afterTrigger = this.trigger.after;
          this.startCalls(afterTrigger);
        }
      }
      if (text) {
        const { emit, stopped } = this.stopper.push(text);
        // Calls begin: text held back as a possible stop sequence's start is text after all.
        const out = this.callText !== null && !stopped ? emit + this.stopper.flush() : emit;
        if (out) {
          yield { type: "text", text: out, tokens: this.count - this.emitted, ...this.takeLogprobs() };
          this.emitted = this.count;
        }
        if (stopped) {
          this.finish = "stop";
          this.bySequence = true;
          return;
        }
      }
      if (afterTrigger !== null) yield* this.callPieces(afterTrigger);
      if (this.count >= this.limit) return;
    }
  }

  /** The held tokens' log-probabilities, for the text that completes them (nothing when not asked for). */
  private takeLogprobs(): { logprobs?: TokenLogprob[] } {
    return this.opts.logprobs === null ? {} : { logprobs: this.logprobs.splice(0) };
  }

  /**
   * The trigger came: what follows is calls. The grammar takes over from here when the trigger ended on a token
   * boundary; when the trigger's last token ran past it (`after`), the grammar's start is behind the model's, and
   * the calls are read as written.
   */
  private startCalls(after: string): void {
    const plan = this.calls!;
    this.callText = ""; // `after` goes to the reader with the calls' first piece (callPieces)
    this.reader = new CallReader(plan.syntax, plan.names);
    if (after === "") this.callState = plan.startGrammar();
  }

  /**
   * The request's logit biases, as llama.cpp's server applies them: each added to its token's logit, −100 a ban
   * (−inf); and with ignore_eos, a ban on every end-of-generation token. TokenBias.set() skips end-of-generation
   * tokens on purpose, so the biases go into its map directly, which node-llama-cpp hands to the sampler as it is
   * (getTokenBiasesForAddon); the e2e tests of ignore_eos and logit_bias fail if a later version changes that.
   */
  private bias(): TokenBias {
    const bias = new TokenBias(this.model.tokenizer);
    const map = (bias as unknown as { _biases?: unknown })._biases;
    if (!(map instanceof Map))
      throw new Error("node-llama-cpp's TokenBias has no bias map: logit_bias and ignore_eos cannot be honoured");
    for (const [token, value] of this.opts.logitBias ?? []) map.set(token, value <= -100 ? -Infinity : value);
    if (this.opts.ignoreEos) for (const token of eogTokens(this.model)) map.set(token, -Infinity);
    return bias;
  }

  /** Ends the sampler's iteration (node-llama-cpp then stops its evaluation) and leaves the step gate; once. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    try {
      await this.tokens?.return?.();
    } finally {
      this.member.leave();
    }
  }
}

const eogByModel = new WeakMap<LlamaModel, Token[]>();

/** The model's end-of-generation tokens, found once per model (a pass over the whole vocabulary). */
function eogTokens(model: LlamaModel): Token[] {
  let found = eogByModel.get(model);
  if (!found) {
    found = [];
    for (const token of model.iterateAllTokens()) if (model.isEogToken(token)) found.push(token);
    eogByModel.set(model, found);
  }
  return found;
}
