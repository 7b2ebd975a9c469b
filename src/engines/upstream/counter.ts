import { wireTools, type ChatMessage } from "../../api/chat-request.js";
import type { Logger } from "../../observability/log.js";
import type { KeptCount, PromptCounter, Tools } from "../../prompt/build.js";
import { errors } from "../../core/errors.js";
import { attempts, failureOutcome, type Replica, type ReplicaPool } from "./replicas.js";

/**
 * An upper bound on a templated conversation's tokens, with no tokenizer. Every tokenizer in use makes at most
 * one token per UTF-8 byte of text (byte-level BPE), or per byte plus a word-start marker (SentencePiece with
 * byte fallback); the chat template adds its markers around each message and may add a preamble of its own.
 * So: bytes, plus a generous allowance per message and one for the template.
 */
export function promptBound(messages: readonly ChatMessage[], tools: Tools = null): number {
  let n = TEMPLATE_ALLOWANCE;
  for (const m of messages) {
    n += Buffer.byteLength(m.content, "utf8") + 1 + MESSAGE_ALLOWANCE;
    // A call is shown as its name and arguments (JSON), with markers around it; a result by its id too.
    if (m.role === "assistant") {
      for (const c of m.tool_calls ?? []) n += Buffer.byteLength(JSON.stringify(c), "utf8") + MESSAGE_ALLOWANCE;
    } else if (m.role === "tool") n += Buffer.byteLength(m.tool_call_id, "utf8");
  }
  // The tools are shown as their JSON, or a description of it no longer than a few times its size.
  if (tools !== null && tools.length > 0)
    n += 4 * Buffer.byteLength(JSON.stringify(tools), "utf8") + TEMPLATE_ALLOWANCE;
  return n;
}

/** The tokenize endpoints an upstream may have, in the order "auto" tries them. */
export const COUNTING_DIALECTS = ["lucena", "vllm", "llama.cpp"] as const;
export type CountingDialect = (typeof COUNTING_DIALECTS)[number];

/** Why a dialect cannot count on this replica (404, or an answer of another shape): try the next one. */
class NotThisDialect extends Error {}

const COUNT_TIMEOUT_MS = 10_000;
/** Upper bounds on what a chat template adds: per message (role markers), and once (BOS, preamble, turn opener). */
const MESSAGE_ALLOWANCE = 32;
const TEMPLATE_ALLOWANCE = 512;

async function postJson(replica: Replica, path: string, body: unknown, signal: AbortSignal): Promise<unknown> {
  const res = await replica.dispatcher.request({
    method: "POST",
    path,
    headers: replica.headers(),
    body: JSON.stringify(body),
    signal,
    headersTimeout: COUNT_TIMEOUT_MS,
    bodyTimeout: COUNT_TIMEOUT_MS,
  });
  if (res.statusCode === 404 || res.statusCode === 405) {
    await res.body.dump();
    throw new NotThisDialect(`${path}: ${res.statusCode}`);
  }
  if (res.statusCode >= 400) {
    const text = await res.body.text();
    throw new UpstreamCountError(res.statusCode, text.slice(0, 500));
  }
  return res.body.json();
}

/** The replica answered the count with an error (a 400 for a prompt it cannot take, a 5xx, …). */
export class UpstreamCountError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
  ) {
    super(`tokenize request failed with ${status}`);
  }
}

const num = (v: unknown): number | null => (typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : null);

/**
 * Counts with one dialect's endpoint(s); throws NotThisDialect when the replica has no such endpoint. Only a
 * Lucena server trims (and says what it kept); the others count every message.
 */
async function countWith(
  dialect: CountingDialect,
  replica: Replica,
  req: { model: string; messages: readonly ChatMessage[]; maxTokens: number | null; tools?: Tools },
  signal: AbortSignal,
): Promise<KeptCount> {
  const { model, messages } = req;
  const tools = req.tools?.length ? { tools: wireTools(req.tools) } : {};
  const all = (tokens: number): KeptCount => ({ tokens, kept: messages.length });
  switch (dialect) {
    case "lucena": {
      // Another Lucena One server: its count applies the same template and budget rules as its completions, so
      // it is sent the max_tokens a completion would be, and says in _lucena.trimmed_messages what it keeps.
      const sent = { model, messages, ...tools, ...(req.maxTokens !== null ? { max_tokens: req.maxTokens } : {}) };
      const body = (await postJson(replica, replica.path("/tokens/count"), sent, signal)) as {
        usage?: { prompt_tokens?: unknown };
        _lucena?: { trimmed_messages?: unknown };
      };
      const n = num(body?.usage?.prompt_tokens);
      if (n === null) throw new NotThisDialect("no usage.prompt_tokens");
      return { tokens: n, kept: num(body?._lucena?.trimmed_messages) ?? messages.length };
    }
    case "vllm": {
      // vLLM (and SGLang builds that have it): /tokenize takes chat messages and applies the model's template.
      const body = (await postJson(
        replica,
        replica.originPath("/tokenize"),
        { model, messages, ...tools, add_generation_prompt: true },
        signal,
      )) as { count?: unknown };
      const n = num(body?.count);
      if (n === null) throw new NotThisDialect("no count");
      return all(n);
    }
    case "llama.cpp": {
      // llama.cpp's server: template first, then tokenize the text as its completion endpoint does.
      const templated = (await postJson(
        replica,
        replica.originPath("/apply-template"),
        { messages, ...tools },
        signal,
      )) as {
        prompt?: unknown;
      };
      if (typeof templated?.prompt !== "string") throw new NotThisDialect("no prompt");
      const body = (await postJson(
        replica,
        replica.originPath("/tokenize"),
        { content: templated.prompt, add_special: true },
        signal,
      )) as { tokens?: unknown };
      if (!Array.isArray(body?.tokens)) throw new NotThisDialect("no tokens");
      return all(body.tokens.length);
    }
  }
}

/**
 * Counts prompts through the replicas' own tokenize endpoints: the count is the replica's, so trimming and
 * /v1/tokens/count agree with what the replica will evaluate. With "auto", the first dialect a replica answers
 * is remembered. A count goes to the least busy healthy replica; when it cannot be had, the request gets 503.
 */
export class EndpointCounter implements PromptCounter {
  readonly kind = "counter";
  /** The dialect, or its detection under way (one at a time, however many counts arrive first). */
  private dialect: Promise<CountingDialect> | null;

  constructor(
    private readonly modelId: string,
    private readonly upstreamModel: string,
    private readonly pool: ReplicaPool,
    setting: "auto" | CountingDialect,
    private readonly log: Logger,
    /** Other replicas tried when one cannot count. */
    private readonly retries = 2,
  ) {
    this.dialect = setting === "auto" ? null : Promise.resolve(setting);
  }

  bound(messages: readonly ChatMessage[], tools: Tools = null): number {
    return promptBound(messages, tools);
  }

  async count(messages: readonly ChatMessage[], tools: Tools = null): Promise<number> {
    return (await this.countKept(messages, null, tools)).tokens;
  }

  async countKept(messages: readonly ChatMessage[], maxTokens: number | null, tools: Tools = null): Promise<KeptCount> {
    // A count is a side request: it must not steer which replica the next completion goes to.
    const take = (tried: ReadonlySet<Replica>) => {
      const replica = this.pool.pick(tried, false);
      return replica && { replica, release: this.pool.begin(replica) };
    };
    for await (const { replica } of attempts(this.retries, take)) {
      try {
        const req = { model: this.upstreamModel, messages, maxTokens, tools };
        const n = await this.countOn(replica, req, AbortSignal.timeout(COUNT_TIMEOUT_MS));
        this.pool.report(replica, "ok");
        return n;
      } catch (err) {
        if (err instanceof UpstreamCountError && err.status < 500) {
          this.pool.report(replica, "ok");
          this.log.warn(
            { model: this.modelId, replica: replica.label, status: err.status },
            "upstream refused to count a prompt",
          );
          throw errors.invalidRequest(
            `The model's server could not count this prompt (status ${err.status}).`,
            "messages",
          );
        }
        if (err instanceof NoDialect) throw errors.modelUnavailable(this.modelId, 30);
        this.pool.report(replica, failureOutcome(err));
        this.log.warn(
          { model: this.modelId, replica: replica.label, err: (err as Error).message },
          "counting on a replica failed",
        );
      }
    }
    throw errors.modelUnavailable(this.modelId, 5);
  }

  private async countOn(
    replica: Replica,
    req: Parameters<typeof countWith>[2],
    signal: AbortSignal,
  ): Promise<KeptCount> {
    if (!this.dialect) {
      this.dialect = this.detect(replica, signal);
      this.dialect.catch(() => (this.dialect = null)); // a failed detection is tried again on the next count
    }
    return countWith(await this.dialect, replica, req, signal);
  }

  /** "auto": the first dialect that counts a fixed short conversation on this replica. */
  private async detect(replica: Replica, signal: AbortSignal): Promise<CountingDialect> {
    for (const dialect of COUNTING_DIALECTS) {
      try {
        await countWith(
          dialect,
          replica,
          { model: this.upstreamModel, messages: [{ role: "user", content: "Hello" }], maxTokens: null },
          signal,
        );
        this.log.info(
          { model: this.modelId, replica: replica.label, dialect },
          "counting prompts with the upstream's tokenize endpoint",
        );
        return dialect;
      } catch (err) {
        // A missing endpoint, an answer of another shape, or a refusal of the request's form: not this one.
        if (!(err instanceof NotThisDialect) && !(err instanceof UpstreamCountError && err.status < 500)) throw err;
      }
    }
    this.log.error(
      { model: this.modelId, replica: replica.label },
      "the upstream has no tokenize endpoint Lucena One knows: set upstream.tokenizer to a GGUF file with the model's tokenizer",
    );
    throw new NoDialect();
  }
}

class NoDialect extends Error {}
