import type { LlamaEmbeddingContext, LlamaModel } from "node-llama-cpp";
import type { ModelConfig } from "../../config/schema.js";
import { errors } from "../../core/errors.js";
import type { Logger } from "../../observability/log.js";
import type { PromptEncoder } from "../../prompt/build.js";
import type { Embeddings, Engine, EngineEvent, EngineStats, EngineStatus, GenerateOptions } from "../engine.js";
import { resolveModelPath } from "./model-source.js";
import { llamaRuntime } from "./runtime.js";
import { engineThreads } from "./llama-engine.js";

/** One input of POST /v1/embeddings: a text, or the client's own token ids. */
export type EmbeddingInput = string | readonly number[];

/**
 * An embedding model (`kind: "embedding"`): a GGUF served in-process through node-llama-cpp's embedding context,
 * one input at a time, in arrival order. It answers POST /v1/embeddings only; a completion on it is a 400.
 */
export class EmbeddingEngine implements Engine {
  status: EngineStatus = "loading";
  contextSize = 0;
  private model?: LlamaModel;
  private context?: LlamaEmbeddingContext;
  private vocabularySize = 0;
  /** The batches queued or running: each waits for the one before it. */
  private tail: Promise<unknown> = Promise.resolve();
  private busy = 0;
  private waiting = 0;
  private loading?: Promise<void>;
  private readonly loadAbort = new AbortController();
  private evaluated = 0;

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
    try {
      const modelPath = await resolveModelPath(this.config.source, this.dataDir, this.log, this.loadAbort.signal);
      const llama = await llamaRuntime(this.log);
      this.model = await llama.loadModel({ modelPath, useMmap: this.config.mmap, loadSignal: this.loadAbort.signal });
      const train = this.model.trainContextSize || Infinity;
      this.context = await this.model.createEmbeddingContext({
        contextSize: Math.min(this.config.context_size, train),
        threads: engineThreads(this.config.threads),
        createSignal: this.loadAbort.signal,
      });
      for (const _ of this.model.iterateAllTokens()) this.vocabularySize++;
      this.contextSize = Math.min(this.config.context_size, train);
      this.status = "ready";
      this.log.info(
        {
          model: this.config.id,
          file: modelPath,
          kind: "embedding",
          contextSize: this.contextSize,
          dimensions: this.dimensions,
        },
        "model loaded",
      );
    } catch (err) {
      this.status = "failed";
      this.log.error({ model: this.config.id, err: (err as Error).message }, "model failed to load");
      throw err;
    }
  }

  /** The length of each vector (the model's embedding size). */
  get dimensions(): number {
    return this.model?.embeddingVectorSize ?? 0;
  }

  /**
   * Embeds the inputs, in order, after the batches before it. Every input is tokenized and checked first (an
   * input too long for the context, or a token outside the vocabulary, is a 400 naming it, before anything
   * runs); a full queue is a 503 at once; then `admit` hears the tokens. Stops between inputs when `signal`
   * aborts.
   */
  embed(inputs: readonly EmbeddingInput[], signal: AbortSignal, admit: (tokens: number) => void): Promise<Embeddings> {
    const model = this.model!;
    const limit = Math.min(this.contextSize, this.config.max_input_tokens);
    const tokenized = inputs.map((input, i) => {
      // Text as llama.cpp's server embeds it: the model's BOS first, when it adds one.
      const bos = model.tokens.shouldPrependBosToken && model.tokens.bos !== null ? [model.tokens.bos] : [];
      const tokens = typeof input === "string" ? [...bos, ...model.tokenize(input)] : [...input];
      const bad = typeof input === "string" ? undefined : tokens.find((t) => t < 0 || t >= this.vocabularySize);
      if (bad !== undefined)
        throw errors.invalidRequest(`input[${i}] names token ${bad}, outside this model's vocabulary.`, "input");
      if (tokens.length === bos.length && typeof input === "string")
        throw errors.invalidRequest(`input[${i}] is empty.`, "input");
      if (tokens.length > limit) {
        throw errors.invalidRequest(
          `input[${i}] has ${tokens.length} tokens; this model embeds at most ${limit} at once.`,
          "input",
        );
      }
      return tokens;
    });
    const promptTokens = tokenized.reduce((n, t) => n + t.length, 0);
    if (this.waiting >= this.config.queue_size + 1) throw errors.queueFull(this.config.id, 2);
    admit(promptTokens);
    this.waiting++;
    const run = this.tail.then(async () => {
      this.waiting--;
      this.busy++;
      try {
        const vectors: Float32Array[] = [];
        for (const tokens of tokenized) {
          if (signal.aborted) break;
          const { vector } = await this.context!.getEmbeddingFor(tokens as never);
          vectors.push(unit(vector));
          this.evaluated += tokens.length;
        }
        return { vectors, promptTokens };
      } finally {
        this.busy--;
      }
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  readonly encoder: PromptEncoder = {
    kind: "tokenizer",
    encode: () => {
      throw this.notChat();
    },
  };

  generate(_opts: GenerateOptions): AsyncGenerator<EngineEvent, void, undefined> {
    throw this.notChat();
  }

  private notChat() {
    return errors.invalidRequest(
      `The model '${this.config.id}' is an embedding model: it answers POST /v1/embeddings only.`,
      "model",
    );
  }

  stats(): EngineStats {
    return {
      busy: this.busy,
      waiting: this.waiting,
      sequences: 1,
      promptTokensEvaluated: this.evaluated,
      promptTokensReused: 0,
    };
  }

  async close(): Promise<void> {
    this.loadAbort.abort();
    await this.loading?.catch(() => undefined);
    await this.tail;
    await this.context?.dispose();
    await this.model?.dispose();
  }
}

/** The vector scaled to length 1 (as OpenAI's and llama.cpp's server's embeddings are). */
function unit(vector: readonly number[]): Float32Array {
  let sum = 0;
  for (const v of vector) sum += v * v;
  const norm = Math.sqrt(sum) || 1;
  return Float32Array.from(vector, (v) => v / norm);
}
