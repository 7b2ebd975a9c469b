import {
  LlamaGrammarEvaluationState,
  resolveChatWrapper,
  type ChatWrapper,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaGrammar,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import { availableParallelism } from "node:os";
import type { ChatMessage, ToolSet } from "../../api/chat-request.js";
import type { ModelConfig } from "../../config/schema.js";
import { errors } from "../../core/errors.js";
import type { Logger } from "../../observability/log.js";
import type { PromptEncoder, Tools } from "../../prompt/build.js";
import type { Engine, EngineEvent, EngineStats, EngineStatus, GenerateOptions, SchedulerStats } from "../engine.js";
import { cpuShare, type ThreadsHandle } from "./cpu-share.js";
import { LlamaGeneration, type CallPlan } from "./generation.js";
import { toolCallGrammar, toolSyntax } from "./tool-calls.js";
import { Grammars } from "./grammars.js";
import { PromptTokenizer } from "./prompt-tokenizer.js";
import { resolveModelPath } from "./model-source.js";
import { SequencePool, type Lease } from "./sequence-pool.js";
import { StepGate } from "./step-gate.js";
import { llamaRuntime } from "./runtime.js";
import { releaseFreedMemory, threadsPersist } from "./thread-pool.js";

/**
 * `threads: 0` (the default): every core when the engine's threads persist across decode steps (thread-pool.ts).
 * Without that, all cores but one: each step would start its threads anew and wait on the scheduler for them
 * (measured on 2 cores: the tiny model decodes about 30x slower with 2 such threads than with 1).
 * While other processes use the cores, an engine with `threads: 0` decodes with fewer (cpu-share.ts).
 */
export function engineThreads(configured: number): number {
  if (configured > 0) return configured;
  return threadsPersist() ? availableParallelism() : Math.max(1, availableParallelism() - 1);
}

/**
 * The step scheduler's settings (step-gate.ts).
 * - `batch_size: 0` (the default): most prompt tokens in a step, 256 on a CPU, 512 with a GPU. Measured on 2 cores
 *   with AMX and the bench model, prompt tokens per second by step size: 32: 604, 128: 653, 256: 644, 512: 605
 *   (about 1.7 ms a prompt token, so a 250 ms step beside streams has room for ~130). Without AMX (AVX2 only)
 *   a prompt token costs about 8 ms: 256 tokens are a 2 s step, the longest pause a stream can see.
 * - `tpot_target_ms: 0`: 250 ms on a CPU, 50 with a GPU.
 * - Beside streams, a step always has room for at least MIN_PROMPT_TOKENS prompt tokens (or `batch_size`, if less).
 */
export function engineStepOptions(
  config: Pick<ModelConfig, "batch_size" | "tpot_target_ms">,
  gpu: boolean,
): { promptTokens: number; targetStepMs: number; minPromptTokens: number } {
  const promptTokens = config.batch_size > 0 ? config.batch_size : gpu ? 512 : 256;
  const targetStepMs = config.tpot_target_ms > 0 ? config.tpot_target_ms : gpu ? 50 : 250;
  return { promptTokens, targetStepMs, minPromptTokens: Math.min(MIN_PROMPT_TOKENS, promptTokens) };
}

/**
 * Fewest prompt tokens a step beside streams holds: however many streams there are and however slow the machine,
 * a waiting prompt advances by at least this much a step (bench model: about 55 ms of prompt work).
 */
const MIN_PROMPT_TOKENS = 32;

/**
 * node-llama-cpp's batch (llama.cpp's n_batch and n_ubatch): room for a step's prompt tokens and every sequence's
 * token beside them, so that node-llama-cpp decodes each step in one go; rounded up to a multiple of 32, as an
 * odd size costs every step (bench model, 128-token prompt chunks: 330 ms each with n_ubatch 136, 210 ms with
 * 128, 144, 160 or 512).
 */
export function contextBatchSize(promptTokens: number, sequences: number): number {
  return Math.ceil((promptTokens + sequences) / 32) * 32;
}

/** How long close() waits for a load to stop, then for running generations to stop (each at its next step). */
const DRAIN_WAIT_MS = 10_000;

/** Resolves when `p` settles or after `ms`, whichever is first. */
async function withinMs(p: Promise<unknown> | undefined, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** The embedded engine: a GGUF model served in-process by llama.cpp, with `parallel` sequences. */
export class LlamaEngine implements Engine {
  status: EngineStatus = "loading";
  contextSize = 0;
  private model?: LlamaModel;
  private context?: LlamaContext;
  private chatWrapper?: ChatWrapper;
  private grammars?: Grammars;
  /** Tokens in the model's vocabulary (a logit_bias must name one of them). */
  private vocabularySize = 0;
  private pool?: SequencePool<LlamaContextSequence>;
  /** Decides what each decode step holds. */
  private gate?: StepGate;
  /** The engine's share of the cores (cpu-share.ts). */
  private threads?: ThreadsHandle;
  private readonly loadAbort = new AbortController();
  /** Aborted by close(): every generation stops at its next step, so none runs while the context is disposed. */
  private readonly closing = new AbortController();
  /** The load under way or done (close() waits for it: a load still running would create what close() frees). */
  private loading?: Promise<void>;
  /** Past the download: llama.cpp is loading, and stops soon after an abort. */
  private loadingNative = false;
  /** Generations whose body runs (between claiming a sequence and giving it back), and who waits for none. */
  private running = 0;
  private drained?: () => void;

  constructor(
    private readonly config: ModelConfig,
    private readonly dataDir: string,
    private readonly log: Logger,
  ) {}

  get modelId(): string {
    return this.config.id;
  }

  load(): Promise<void> {
    this.loading ??= this.loadOnce();
    return this.loading;
  }

  private async loadOnce(): Promise<void> {
    const started = performance.now();
    try {
      const modelPath = await resolveModelPath(this.config.source, this.dataDir, this.log, this.loadAbort.signal);
      this.loadingNative = true;
      const llama = await llamaRuntime(this.log);
      this.grammars = new Grammars(llama);
      this.model = await llama.loadModel({ modelPath, useMmap: this.config.mmap, loadSignal: this.loadAbort.signal });
      const train = this.model.trainContextSize || Infinity;
      const steps = engineStepOptions(this.config, llama.gpu !== false);
      this.gate = new StepGate(steps);
      const share = cpuShare(llama, this.log);
      const threads = engineThreads(this.config.threads);
      this.context = await share.whileCreating(() =>
        this.model!.createContext({
          contextSize: Math.min(this.config.context_size, train),
          sequences: this.config.parallel,
          threads,
          flashAttention: this.config.flash_attention,
          batchSize: contextBatchSize(steps.promptTokens, this.config.parallel),
          createSignal: this.loadAbort.signal,
        }),
      );
      this.threads = this.config.threads > 0 ? share.fix(threads) : share.adapt(threads);
      // Made in order, so each one's index in the pool is its llama.cpp sequence id (the step gate orders by it).
      const sequences = Array.from({ length: this.config.parallel }, () => this.context!.getSequence());
      this.pool = new SequencePool(this.config.id, sequences, this.config.queue_size);
      this.chatWrapper = resolveChatWrapper(this.model);
      for (const _ of this.model.iterateAllTokens()) this.vocabularySize++;
      this.tokenizer = new PromptTokenizer(this.model, this.chatWrapper);
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
          batchSize: steps.promptTokens,
          tpotTargetMs: steps.targetStepMs,
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

  private tokenizer?: PromptTokenizer;

  readonly encoder = {
    kind: "tokenizer" as const,
    encode: (messages: readonly ChatMessage[], limit?: number, tools?: Tools) =>
      this.tokenizer!.encode(messages, limit, tools ?? null),
    encodeText: (prompt: string | readonly number[], suffix: string | null, limit?: number) => {
      // A token id outside the vocabulary would reach llama.cpp, which does not check it.
      if (typeof prompt !== "string") {
        const bad = prompt.find((t) => !Number.isInteger(t) || t < 0 || t >= this.vocabularySize);
        if (bad !== undefined) {
          throw errors.invalidRequest(
            `The prompt names token ${bad}, outside this model's vocabulary of ${this.vocabularySize} tokens.`,
            "prompt",
          );
        }
      }
      return this.tokenizer!.encodeText(prompt, suffix, limit);
    },
  } satisfies PromptEncoder;

  private promptTokensEvaluated = 0;
  private promptTokensReused = 0;

  stats(): EngineStats {
    return {
      busy: this.pool?.busy ?? 0,
      waiting: this.pool?.waiting ?? 0,
      sequences: this.config.parallel,
      threads: this.threads?.threads ?? 0,
      promptTokensEvaluated: this.promptTokensEvaluated,
      promptTokensReused: this.promptTokensReused,
      ...(this.gate ? { scheduler: this.schedulerStats(this.gate) } : {}),
    };
  }

  private schedulerStats(gate: StepGate): SchedulerStats {
    const c = gate.costs();
    const round = (v: number | null | undefined) => (v == null ? null : Math.round(v * 1000) / 1000);
    return {
      steps: c.steps,
      tpotTargetMs: gate.targetStepMs,
      promptTokenMs: round(c.promptTokenMs),
      decodeStepMs: round(c.decodeMs[1]),
      promptBudget: c.lastPromptBudget,
    };
  }

  /** Admits the request at once (or throws a 503 when the queue is full); the wait happens while iterating. */
  generate(opts: GenerateOptions): AsyncGenerator<EngineEvent, void, undefined> {
    if (opts.input.kind !== "tokens") throw new Error("the embedded engine needs prompt tokens"); // a caller's bug, never a client's
    const prompt = opts.input.tokens as Token[];
    if (opts.format !== null && opts.ignoreEos) {
      throw errors.invalidRequest(
        "ignore_eos cannot be combined with a constrained answer (response_format, grammar, json_schema): " +
          "the answer ends where its grammar is complete.",
        "ignore_eos",
      );
    }
    if (opts.format !== null && opts.tools !== null) {
      throw errors.invalidRequest(
        "response_format (or grammar, json_schema) cannot be combined with tools on an embedded model.",
        "response_format",
      );
    }
    if (opts.logitBias !== null) {
      const size = this.vocabularySize;
      for (const token of opts.logitBias.keys()) {
        if (token >= size) {
          throw errors.invalidRequest(
            `logit_bias names token ${token}, outside this model's vocabulary of ${size} tokens.`,
            "logit_bias",
          );
        }
      }
    }
    // Built and parsed before admission: a schema or grammar that cannot be followed is a 400, not a stream error.
    const grammar = opts.format === null ? null : this.grammars!.for(opts.format);
    const calls = opts.tools === null ? null : this.callPlan(opts.tools);
    const signal = AbortSignal.any([opts.signal, this.closing.signal]);
    const lease = this.pool!.acquire(signal, (s) => s.compareContextTokens(prompt).firstDifferentIndex);
    return this.run(lease, prompt, { ...opts, signal }, grammar, calls);
  }

  /** How this model writes calls to these tools, and the grammar that holds the calls to their schemas. */
  private callPlan(set: ToolSet): CallPlan {
    const syntax = toolSyntax(this.chatWrapper!);
    const forced = set.choice !== "auto";
    const grammar = this.grammars!.forTools(toolCallGrammar(syntax, set, forced));
    return {
      syntax,
      names: set.tools.map((t) => t.name),
      forced,
      startGrammar: () => new LlamaGrammarEvaluationState({ model: this.model!, grammar }),
    };
  }

  private async *run(
    lease: Lease<LlamaContextSequence>,
    prompt: Token[],
    opts: GenerateOptions,
    grammar: LlamaGrammar | null,
    calls: CallPlan | null,
  ): AsyncGenerator<EngineEvent, void, undefined> {
    const seq = await lease.ready.then(
      () => lease.claim(),
      () => null,
    );
    if (!seq) {
      // Cancelled while waiting for a sequence: nothing of the prompt was evaluated.
      yield { type: "done", finishReason: "cancelled", completionTokens: 0, promptTokens: 0 };
      return;
    }
    this.running++;
    let generation: LlamaGeneration | undefined;
    try {
      // Keep what the sequence already holds of this prompt; at least the last token is evaluated anew,
      // since its logits are what the first generated token is sampled from.
      // The pool scored the sequence by the prefix of this prompt it holds: nothing has changed it since.
      const reuse = Math.min(lease.score, prompt.length - 1);
      this.promptTokensReused += reuse;
      this.promptTokensEvaluated += prompt.length - reuse;
      const limit = Math.min(opts.maxTokens, this.contextSize - prompt.length);
      generation = new LlamaGeneration(
        this.model!,
        seq,
        this.gate!.join(this.pool!.indexOf(seq)),
        prompt,
        reuse,
        limit,
        opts,
        grammar,
        calls,
      );
      yield* generation.events();
    } finally {
      await generation?.dispose();
      this.pool!.release(seq);
      if (--this.running === 0) this.drained?.();
    }
  }

  /**
   * Disposes in the one order that never frees what native code still uses: stop the load and wait for it to
   * settle (an aborted load may still have made the model), stop every generation and wait until each has given
   * its sequence back (a generation's last steps, the erase and evaluation of its sequence, run on llama.cpp's
   * context), then the context, then the model. A generation suspended by a consumer that never resumes it
   * cannot end: after DRAIN_WAIT_MS the context is disposed anyway (node-llama-cpp rejects its later calls).
   * Only the context and model that exist by then are disposed.
   */
  async close(): Promise<void> {
    this.loadAbort.abort();
    this.closing.abort();
    // A download does not always stop at once on abort (node-llama-cpp retries an unreachable host): close()
    // waits only for llama.cpp's part of a load, and no longer than DRAIN_WAIT_MS.
    if (this.loadingNative)
      await withinMs(
        this.loading?.catch(() => undefined),
        DRAIN_WAIT_MS,
      );
    if (this.running > 0) {
      await withinMs(new Promise<void>((resolve) => (this.drained = resolve)), DRAIN_WAIT_MS);
      if (this.running > 0)
        this.log.warn({ model: this.config.id, running: this.running }, "closing with generations still running");
    }
    this.status = "unavailable";
    await this.context?.dispose();
    this.threads?.release();
    await this.model?.dispose();
  }
}
