import {
  getLlama,
  LlamaLogLevel,
  resolveChatWrapper,
  type ChatHistoryItem,
  type ChatWrapper,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import { availableParallelism } from "node:os";
import type { ChatMessage } from "../../api/chat-request.js";
import type { ModelConfig } from "../../config/schema.js";
import type { Logger } from "../../observability/log.js";
import type { PromptEncoder } from "../../prompt/build.js";
import { SAMPLING_DEFAULTS, type Engine, type EngineStats, type EngineEvent, type EngineStatus, type FinishReason, type GenerateOptions } from "../engine.js";
import { StopMatcher } from "../stop-sequences.js";
import { IncrementalDetokenizer } from "./detokenizer.js";
import { resolveModelPath } from "./model-source.js";
import { SequencePool, type Lease } from "./sequence-pool.js";
import { StepGate, type Member } from "./step-gate.js";
import { loadThreadPool, releaseFreedMemory, threadsPersist } from "./thread-pool.js";

let runtime: Promise<Llama> | undefined;

/** One llama.cpp runtime per process, shared by every embedded model; its log goes to ours. */
export function llamaRuntime(log: Logger): Promise<Llama> {
  if (!runtime) {
    const pool = loadThreadPool(); // before getLlama: it must be in place when the CPU backend loads
    if (pool.loaded) log.debug({ component: "engine" }, "engine threads persist across decode steps");
    else log.warn({ component: "engine", reason: pool.reason }, "engine threads are started anew at every decode step; with more than one thread, decoding is much slower");
  }
  runtime ??= getLlama({
    gpu: "auto",
    logLevel: LlamaLogLevel.warn,
    logger: (level, message) => {
      const text = message.trim();
      if (!text) return;
      if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) log.error({ component: "llama.cpp" }, text);
      else if (level === LlamaLogLevel.warn) log.warn({ component: "llama.cpp" }, text);
      else log.debug({ component: "llama.cpp" }, text);
    },
  });
  return runtime;
}

/**
 * `threads: 0` (the default): every core when the engine's threads persist across decode steps (thread-pool.ts).
 * Without that, all cores but one: each step would start its threads anew and wait on the scheduler for them
 * (measured on 2 cores: the tiny model decodes about 30x slower with 2 such threads than with 1).
 */
export function engineThreads(configured: number): number {
  if (configured > 0) return configured;
  return threadsPersist() ? availableParallelism() : Math.max(1, availableParallelism() - 1);
}

/** The conversation in the model's chat template, ending with the assistant's turn to speak, as tokens. */
export function templateTokens(model: LlamaModel, chatWrapper: ChatWrapper, messages: readonly ChatMessage[]): number[] {
  const history: ChatHistoryItem[] = messages.map((m): ChatHistoryItem => {
    if (m.role === "system") return { type: "system", text: m.content };
    if (m.role === "user") return { type: "user", text: m.content };
    return { type: "model", response: [m.content] };
  });
  history.push({ type: "model", response: [] }); // the assistant's turn, to be generated
  const { contextText } = chatWrapper.generateContextState({ chatHistory: history });
  return contextText.tokenize(model.tokenizer);
}

/**
 * `batch_size: 0` (the default): 32 tokens a step on a CPU, 512 with a GPU. Measured on 2 cores with the bench
 * model: 32-token steps evaluate a 2,048-token prompt faster than 512-token ones (12.3 s against 17.2 s), keep two
 * streams' inter-token p99 within 2× of the median (1.6× against 5.5×) while a third prompt is evaluated, and
 * decode 8 streams faster (40.5 against 24.5 tok/s). A GPU wants large steps for prompts.
 */
export function engineBatchSize(configured: number, gpu: boolean): number {
  return configured > 0 ? configured : gpu ? 512 : 32;
}

/** The embedded engine: a GGUF model served in-process by llama.cpp, with `parallel` sequences. */
export class LlamaEngine implements Engine {
  status: EngineStatus = "loading";
  contextSize = 0;
  private model?: LlamaModel;
  private context?: LlamaContext;
  private chatWrapper?: ChatWrapper;
  private pool?: SequencePool<LlamaContextSequence>;
  /** Generating sequences ask for their next tokens together, so that they share decode steps. */
  private readonly gate = new StepGate();
  private readonly loadAbort = new AbortController();

  constructor(
    private readonly config: ModelConfig,
    private readonly dataDir: string,
    private readonly log: Logger,
  ) {}

  get modelId(): string {
    return this.config.id;
  }

  async load(): Promise<void> {
    const started = performance.now();
    try {
      const modelPath = await resolveModelPath(this.config.source, this.dataDir, this.log, this.loadAbort.signal);
      const llama = await llamaRuntime(this.log);
      this.model = await llama.loadModel({ modelPath, useMmap: this.config.mmap, loadSignal: this.loadAbort.signal });
      const train = this.model.trainContextSize || Infinity;
      this.context = await this.model.createContext({
        contextSize: Math.min(this.config.context_size, train),
        sequences: this.config.parallel,
        threads: engineThreads(this.config.threads),
        flashAttention: this.config.flash_attention,
        batchSize: engineBatchSize(this.config.batch_size, llama.gpu !== false),
        createSignal: this.loadAbort.signal,
      });
      // Made in order, so each one's index in the pool is its llama.cpp sequence id (the step gate orders by it).
      const sequences = Array.from({ length: this.config.parallel }, () => this.context!.getSequence());
      this.pool = new SequencePool(this.config.id, sequences, this.config.queue_size);
      this.chatWrapper = resolveChatWrapper(this.model);
      this.contextSize = this.context.contextSize;
      releaseFreedMemory();
      this.status = "ready";
      this.log.info(
        {
          model: this.config.id,
          file: modelPath,
          contextSize: this.contextSize,
          sequences: this.config.parallel,
          threads: this.context.currentThreads,
          flashAttention: this.context.flashAttention,
          batchSize: this.context.batchSize,
          mmap: this.model.useMmap,
          chatTemplate: this.chatWrapper.wrapperName,
          ms: Math.round(performance.now() - started),
        },
        "model loaded",
      );
    } catch (err) {
      this.status = "failed";
      this.log.error({ model: this.config.id, err: (err as Error).message }, "model failed to load");
      throw err;
    }
  }

  readonly encoder: PromptEncoder = {
    encode: (messages: readonly ChatMessage[]): number[] => templateTokens(this.model!, this.chatWrapper!, messages),
  };

  private promptTokensEvaluated = 0;
  private promptTokensReused = 0;

  stats(): EngineStats {
    return {
      busy: this.pool?.busy ?? 0,
      waiting: this.pool?.waiting ?? 0,
      sequences: this.config.parallel,
      promptTokensEvaluated: this.promptTokensEvaluated,
      promptTokensReused: this.promptTokensReused,
    };
  }

  /** Admits the request at once (or throws a 503 when the queue is full); the wait happens while iterating. */
  generate(opts: GenerateOptions): AsyncGenerator<EngineEvent, void, undefined> {
    if (!opts.prompt) throw new Error("the embedded engine needs prompt tokens"); // a caller's bug, never a client's
    const prompt = opts.prompt as Token[];
    const lease = this.pool!.acquire(opts.signal, (s) => s.compareContextTokens(prompt).firstDifferentIndex);
    return this.run(lease, prompt, opts);
  }

  private async *run(lease: Lease<LlamaContextSequence>, prompt: Token[], opts: GenerateOptions): AsyncGenerator<EngineEvent, void, undefined> {
    const model = this.model!;
    const seq = await lease.ready.then(() => lease.claim(), () => null);
    if (!seq) {
      yield { type: "done", finishReason: "cancelled", completionTokens: 0 };
      return;
    }
    try {
      // Keep what the sequence already holds of this prompt; at least the last token is evaluated anew,
      // since its logits are what the first generated token is sampled from.
      // The pool scored the sequence by the prefix of this prompt it holds: nothing has changed it since.
      const reuse = Math.min(lease.score, prompt.length - 1);
      if (reuse < seq.nextTokenIndex) await seq.eraseContextTokenRanges([{ start: reuse, end: seq.nextTokenIndex }]);
      this.promptTokensReused += reuse;
      this.promptTokensEvaluated += prompt.length - reuse;

      const detok = new IncrementalDetokenizer(model);
      const stopper = new StopMatcher(opts.stop);
      const generated: Token[] = [];
      const penalties = opts.presencePenalty !== 0 || opts.frequencyPenalty !== 0;
      let finish: FinishReason = "length";
      let bySequence = false;
      let count = 0;
      const room = this.contextSize - prompt.length;

      if (opts.signal.aborted) finish = "cancelled";
      else {
        const tokens = seq.evaluate(prompt.slice(reuse), {
          temperature: opts.temperature,
          topK: opts.topK,
          topP: opts.topP,
          minP: SAMPLING_DEFAULTS.minP,
          ...(opts.seed !== null ? { seed: opts.seed } : {}),
          ...(penalties
            ? {
                repeatPenalty: {
                  punishTokens: () => generated,
                  penalty: 1,
                  presencePenalty: opts.presencePenalty,
                  frequencyPenalty: opts.frequencyPenalty,
                },
              }
            : {}),
          yieldEogToken: true,
        });
        // After the first token (the prompt evaluated), each next token is asked for through the step gate,
        // so that the generating sequences share decode steps (step-gate.ts).
        const it = tokens[Symbol.asyncIterator]();
        let member: Member | undefined;
        try {
          for (;;) {
            if (member) await member.arrive();
            const step = await it.next();
            member?.received();
            if (step.done) break;
            const token = step.value;
            member ??= this.gate.join(this.pool!.indexOf(seq));
            if (opts.signal.aborted) { finish = "cancelled"; break; }
            count++;
            if (model.isEogToken(token)) { finish = "stop"; break; }
            generated.push(token);
            const text = detok.push(token);
            if (text) {
              const { emit, stopped } = stopper.push(text);
              if (emit) yield { type: "text", text: emit };
              if (stopped) { finish = "stop"; bySequence = true; break; }
            }
            if (count >= opts.maxTokens || count >= room) break;
          }
        } finally {
          member?.leave();
          await it.return?.();
        }
      }
      // Text held back (an unfinished character, a possible start of a stop sequence) is real text unless a
      // stop sequence matched or the client is gone.
      if (finish !== "cancelled" && !bySequence) {
        const { emit, stopped } = stopper.push(detok.flush());
        const rest = stopped ? emit : emit + stopper.flush();
        if (stopped) finish = "stop";
        if (rest) yield { type: "text", text: rest };
      }
      yield { type: "done", finishReason: finish, completionTokens: count };
    } finally {
      this.pool!.release(seq);
    }
  }

  async close(): Promise<void> {
    this.loadAbort.abort();
    await this.context?.dispose();
    await this.model?.dispose();
  }
}
