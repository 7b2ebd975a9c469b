import type { ToolSet } from "../api/chat-request.js";
import type { PromptCounter, PromptEncoder, PromptInput } from "../prompt/build.js";

/** llama.cpp's server defaults, which suit local models better than sampling the whole distribution. */
export const SAMPLING_DEFAULTS = { topK: 40, topP: 0.95, minP: 0.05 } as const;

/** Why a generation ended. `cancelled`: the client went away (never sent on the wire). */
export type FinishReason = "stop" | "length" | "tool_calls" | "cancelled";

/** How an answer is sampled, every parameter resolved (prompt/resolve.ts). */
export interface Sampling {
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed: number | null;
  presencePenalty: number;
  frequencyPenalty: number;
  /**
   * Tokens below this share of the most likely token's probability are never sampled (llama.cpp's min_p); null:
   * the engine's default (the embedded engine's is SAMPLING_DEFAULTS.minP; an upstream's is its own).
   */
  minP: number | null;
  /**
   * llama.cpp's repeat penalty: the logit of each token among the last `lastN` tokens of prompt and answer is
   * divided by `penalty` (multiplied when negative); `lastN` −1: the whole context. null: none. When set, the
   * presence and frequency penalties count the same window, as in llama.cpp's server.
   */
  repeatPenalty: {
    penalty: number;
    lastN: number;
    /** The request field it came in, which an error about it names. */
    field: "repeat_penalty" | "repetition_penalty";
  } | null;
  /** Never end at the model's end-of-generation token: the answer runs to max_tokens (or a stop sequence). */
  ignoreEos: boolean;
  stop: string[];
  /** What the answer's text must be: free text (null), or constrained (response_format, llama.cpp's grammar). */
  format: OutputFormat | null;
  /** The functions the model may call, and how (tool_choice); null: none (no tools, or tool_choice "none"). */
  tools: ToolSet | null;
  /** OpenAI's logit_bias: token id → bias added to its logit (−100 bans it); null: none. */
  logitBias: ReadonlyMap<number, number> | null;
  /**
   * Each answer token's log-probability, with this many likeliest alternatives (OpenAI's logprobs with
   * top_logprobs); null: none.
   */
  logprobs: number | null;
}

/** One answer token's log-probability, in OpenAI's shape (`logprobs.content[]`). */
export interface TokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

/**
 * A constraint on the answer's text. `json_object`: one JSON object. `json_schema`: a JSON value valid against
 * `schema` (OpenAI's response_format, and llama.cpp's `json_schema` field). `grammar`: llama.cpp's GBNF, as
 * llama.cpp's `grammar` field. The embedded engine enforces it with a grammar (structured/); an upstream model
 * passes it on to its replicas.
 */
export type OutputFormat =
  | { kind: "json_object" }
  | {
      kind: "json_schema";
      schema: Readonly<Record<string, unknown>>;
      name: string;
      strict: boolean;
      /** The request field it came in, which an error about it names. */
      field: "response_format" | "json_schema";
    }
  | { kind: "grammar"; gbnf: string };

/**
 * Sampling as a request that sets only `maxTokens` and `temperature` gets it from the embedded engine, with
 * `over` on top: for callers inside the process (benchmarks, tests). A request's own is resolved in
 * prompt/resolve.ts.
 */
export function sampling(over: Partial<Sampling> & Pick<Sampling, "maxTokens" | "temperature">): Sampling {
  return {
    topP: SAMPLING_DEFAULTS.topP,
    topK: SAMPLING_DEFAULTS.topK,
    seed: null,
    presencePenalty: 0,
    frequencyPenalty: 0,
    minP: null,
    repeatPenalty: null,
    ignoreEos: false,
    stop: [],
    format: null,
    tools: null,
    logitBias: null,
    logprobs: null,
    ...over,
  };
}

export interface GenerateOptions extends Sampling {
  /** The prompt, in the form the engine's encoder made it: tokens for a tokenizer, messages for a counter. */
  input: PromptInput;
  /** Aborted when the client disconnects: generation stops within one decode step. */
  signal: AbortSignal;
}

/** A piece of one of the answer's calls (see the `tool_call` event). */
export type CallPiece = Extract<EngineEvent, { type: "tool_call" }>;

/** Internal generation events; only the wire formatter knows the JSON and SSE shapes. */
export type EngineEvent =
  | {
      type: "text";
      text: string;
      /** The completion tokens this text completes (several when text was held back; default 1). */
      tokens?: number;
      /** Those tokens' log-probabilities, when the request asked for them. */
      logprobs?: TokenLogprob[];
    }
  | {
      /**
       * A piece of the answer's call `index`, as it is generated: its name (the call's first piece), then its
       * arguments' JSON text in order. The finish reason of an answer that makes calls is `tool_calls`.
       */
      type: "tool_call";
      index: number;
      name?: string;
      arguments?: string;
      /** The completion tokens this piece completes. */
      tokens: number;
    }
  | {
      type: "done";
      finishReason: FinishReason;
      completionTokens: number;
      /**
       * The prompt tokens evaluated for this request, a reused cached prefix included: the whole prompt once the
       * answer began (as the model itself reported it, when that may differ from the count beforehand), fewer
       * when cancelled while the prompt was evaluated, 0 when cancelled in the queue. Absent: the whole prompt
       * if any text came, else none.
       */
      promptTokens?: number;
    };

/** `unavailable`: loaded, but nothing can serve it now (an upstream model whose replicas are all ejected). */
export type EngineStatus = "loading" | "ready" | "failed" | "unavailable";

export interface EngineStats {
  busy: number;
  waiting: number;
  sequences: number;
  /**
   * CPU threads the embedded engine's decode steps use now: its configured count, fewer while other processes
   * use the cores (cpu-share.ts). Absent for upstream models.
   */
  threads?: number;
  /** Prompt tokens evaluated since start, and prompt tokens served from a sequence's cache instead. */
  promptTokensEvaluated: number;
  promptTokensReused: number;
  /** The embedded engine's step scheduler: what it has measured and the budget it gives prompts beside streams. */
  scheduler?: SchedulerStats;
}

export interface SchedulerStats {
  /** Decode steps run. */
  steps: number;
  /** The time per output token the scheduler keeps while prompts arrive beside streams (ms). */
  tpotTargetMs: number;
  /** Measured: what a prompt token adds to a step (ms), and a step of one token without prompt (ms); null before. */
  promptTokenMs: number | null;
  decodeStepMs: number | null;
  /** Prompt tokens the last step beside streams was given (null before any). */
  promptBudget: number | null;
}

/** One upstream replica of a model, for metrics. */
export interface ReplicaStats {
  /** The replica's base URL without credentials. */
  replica: string;
  healthy: boolean;
  inFlight: number;
  requests: number;
  failures: number;
  ejections: number;
}

/**
 * One served model. Concurrency contract: `generate` may be called any number of times at once; the engine
 * queues what it cannot run yet (throwing LUCENA_QUEUE_FULL when its queue is full) and never blocks the
 * event loop. `encoder`, `contextSize` and `generate` are usable only once `status` is `ready`.
 */
export interface Engine {
  readonly modelId: string;
  readonly status: EngineStatus;
  /** Tokens of context allocated per sequence (limits.context_size). */
  readonly contextSize: number;
  /**
   * Tokenizes prompts here (embedded models: `kind: "tokenizer"`), or counts them where the model runs (upstream
   * models: `kind: "counter"`); `generate` is given the prompt in the matching form.
   */
  readonly encoder: PromptEncoder | PromptCounter;
  load(): Promise<void>;
  /** Sequences in use, requests waiting for one, and the pool's size (all 0 before loading). */
  stats(): EngineStats;
  /** The replicas behind an upstream model (absent for embedded models). */
  replicaStats?(): ReplicaStats[];
  /**
   * Admits the request synchronously (throws LUCENA_QUEUE_FULL when the model's queue is full), then yields events
   * as the caller iterates. The caller aborts `opts.signal` when it is done, whatever happened.
   */
  generate(opts: GenerateOptions): AsyncGenerator<EngineEvent, void, undefined>;
  /**
   * An embedding model's vectors (unit length), one per input, and the inputs' tokens; absent on chat models.
   * Checks every input before anything runs (400), and throws LUCENA_QUEUE_FULL when its queue is full.
   */
  embed?(
    inputs: readonly (string | readonly number[])[],
    signal: AbortSignal,
    /** Called with the inputs' tokens once they are checked, before they queue: the key's tpm may refuse them. */
    admit: (tokens: number) => void,
    /** The vector length asked for: an upstream model passes it on; the embedded engine checks it before. */
    dimensions?: number | null,
  ): Promise<Embeddings>;
  /** An embedding model's vector length. */
  readonly dimensions?: number;
  close(): Promise<void>;
}

export interface Embeddings {
  vectors: Float32Array[];
  promptTokens: number;
}
