import { describe, test } from "node:test";
import { asHttp } from "../helpers/errors.js";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import type { ChatMessage } from "../../src/api/chat-request.js";
import { DEFAULT_MODEL } from "../../src/config/defaults.js";
import type { ModelConfig } from "../../src/config/schema.js";
import {
  buildPrompt,
  countPrompt,
  outputReserve,
  preparePrompt,
  type PromptCounter,
  type PromptEncoder,
  type PromptRequest,
} from "../../src/prompt/build.js";
import { LucenaError } from "../../src/core/errors.js";

/**
 * A deterministic stand-in for "apply the chat template, then tokenize": every message costs a fixed
 * overhead plus one token per word, and the assistant's opening turn costs a fixed amount.
 * The token ids say which message they came from (message key * 1000 + position), so a test can read back
 * exactly which messages a prompt was built from.
 */
const PER_MESSAGE = 4;
const GENERATION_PROMPT = 3;
const GEN_TOKEN = 999_999_999;

const words = (s: string) => s.split(/\s+/).filter(Boolean).length;
const cost = (m: ChatMessage) => PER_MESSAGE + words(m.content);
const costOf = (ms: readonly ChatMessage[]) => GENERATION_PROMPT + ms.reduce((n, m) => n + cost(m), 0);

class FakeEncoder implements PromptEncoder {
  readonly kind = "tokenizer";
  private readonly keys = new Map<string, number>();
  private readonly byKey: ChatMessage[] = [];

  encode(messages: readonly ChatMessage[]): number[] {
    const tokens: number[] = [];
    for (const m of messages) {
      const k = `${m.role}\u0000${m.content}`;
      let key = this.keys.get(k);
      if (key === undefined) {
        key = this.byKey.length;
        this.keys.set(k, key);
        this.byKey.push(m);
      }
      for (let i = 0; i < cost(m); i++) tokens.push(key * 1000 + i);
    }
    for (let i = 0; i < GENERATION_PROMPT; i++) tokens.push(GEN_TOKEN);
    return tokens;
  }

  /** The messages the given tokens were encoded from. */
  sourceOf(tokens: readonly number[]): ChatMessage[] {
    const out: ChatMessage[] = [];
    for (const t of tokens) if (t !== GEN_TOKEN && t % 1000 === 0) out.push(this.byKey[t / 1000]);
    assert.deepEqual(
      tokens.slice(-GENERATION_PROMPT),
      Array(GENERATION_PROMPT).fill(GEN_TOKEN),
      "prompt ends with the assistant's turn",
    );
    return out;
  }
}

const model = (over: Partial<ModelConfig> = {}): ModelConfig => ({ ...DEFAULT_MODEL, ...over });
const req = (messages: ChatMessage[], over: Partial<PromptRequest> = {}): PromptRequest => ({
  messages,
  shape: null,
  maxTokens: null,
  tools: null,
  ...over,
});
const user = (content: string): ChatMessage => ({ role: "user", content });
const assistant = (content: string): ChatMessage => ({ role: "assistant", content });
const system = (content: string): ChatMessage => ({ role: "system", content });
/** u0 a0 u1 a1 … u(n-1) a(n-1) then the final user message; each message has `w` words. */
function turns(n: number, w = 2): ChatMessage[] {
  const out: ChatMessage[] = [];
  const text = (tag: string) => Array.from({ length: w }, (_, i) => `${tag}w${i}`).join(" ");
  for (let i = 0; i < n; i++) out.push(user(text(`u${i}`)), assistant(text(`a${i}`)));
  out.push(user(text("last")));
  return out;
}

async function assertLucenaError(
  fn: () => unknown,
  status: number,
  param: string | null,
  check?: (e: LucenaError) => void,
): Promise<void> {
  await assert.rejects(
    async () => fn(),
    (err: unknown) => {
      assert.ok(err instanceof LucenaError, `expected an LucenaError, got ${String(err)}`);
      assert.equal(asHttp(err).status, status);
      assert.equal(asHttp(err).type, "invalid_request_error");
      assert.equal(err.param, param);
      check?.(err);
      return true;
    },
  );
}

const SHAPED = model({
  system_prompt: "model default prompt",
  shapes: {
    concise: { system_prompt: "Be concise." },
    verbose: { system_prompt: "Explain everything in detail." },
    bare: { temperature: 0.1 },
    capped: { system_prompt: "Short answers.", max_tokens: 50 },
  },
  default_shape: null,
});

describe("buildPrompt: system prompt resolution", () => {
  test("a system message in the request wins over shape and model default", async () => {
    const enc = new FakeEncoder();
    const messages = [system("request prompt"), user("hi")];
    const p = await buildPrompt(SHAPED, 8192, enc, req(messages, { shape: "concise" }));
    assert.equal(p.systemPromptSource, "request");
    assert.equal(p.shapeId, "concise");
    assert.deepEqual(p.shape, SHAPED.shapes.concise);
    // Nothing is prepended: the request's messages are encoded as they are.
    assert.deepEqual(enc.sourceOf(p.tokens), messages);
    assert.equal(p.tokens.length, costOf(messages));
    assert.equal(p.keptMessages, 2);
  });

  test("a developer-turned-system message later in the conversation still counts as the request's", async () => {
    const enc = new FakeEncoder();
    const messages = [user("hi"), system("late system"), user("again")];
    const p = await buildPrompt(SHAPED, 8192, enc, req(messages));
    assert.equal(p.systemPromptSource, "request");
    assert.deepEqual(enc.sourceOf(p.tokens), messages);
  });

  test("without a request system message the selected shape's prompt is used", async () => {
    const enc = new FakeEncoder();
    const messages = [user("hi there")];
    const p = await buildPrompt(SHAPED, 8192, enc, req(messages, { shape: "verbose" }));
    assert.equal(p.systemPromptSource, "shape");
    assert.equal(p.shapeId, "verbose");
    assert.deepEqual(enc.sourceOf(p.tokens), [system("Explain everything in detail."), ...messages]);
    assert.equal(p.tokens.length, costOf([system("Explain everything in detail."), ...messages]));
    // The prepended system prompt is not one of the request's messages.
    assert.equal(p.keptMessages, 1);
  });

  test("a shape without a system prompt falls back to the model default", async () => {
    const enc = new FakeEncoder();
    const p = await buildPrompt(SHAPED, 8192, enc, req([user("hi")], { shape: "bare" }));
    assert.equal(p.systemPromptSource, "default");
    assert.equal(p.shapeId, "bare");
    assert.deepEqual(p.shape, { temperature: 0.1 });
    assert.deepEqual(enc.sourceOf(p.tokens), [system("model default prompt"), user("hi")]);
  });

  test("no shape: the model's default prompt, shapeId null", async () => {
    const enc = new FakeEncoder();
    const p = await buildPrompt(SHAPED, 8192, enc, req([user("hi")]));
    assert.equal(p.systemPromptSource, "default");
    assert.equal(p.shapeId, null);
    assert.equal(p.shape, null);
    assert.deepEqual(enc.sourceOf(p.tokens), [system("model default prompt"), user("hi")]);
  });

  test("DEFAULT_MODEL's own default prompt is used as is", async () => {
    const enc = new FakeEncoder();
    const p = await buildPrompt(DEFAULT_MODEL, 8192, enc, req([user("hi")]));
    assert.equal(p.systemPromptSource, "default");
    assert.deepEqual(enc.sourceOf(p.tokens)[0], system(DEFAULT_MODEL.system_prompt!));
  });

  test("no request, shape or model prompt: none, nothing prepended", async () => {
    const enc = new FakeEncoder();
    const p = await buildPrompt(model({ system_prompt: null }), 8192, enc, req([user("hi")]));
    assert.equal(p.systemPromptSource, "none");
    assert.equal(p.shapeId, null);
    assert.deepEqual(enc.sourceOf(p.tokens), [user("hi")]);
    assert.equal(p.tokens.length, costOf([user("hi")]));
  });

  test("the model's default_shape applies when the request names none", async () => {
    const enc = new FakeEncoder();
    const m = { ...SHAPED, default_shape: "concise" };
    const p = await buildPrompt(m, 8192, enc, req([user("hi")]));
    assert.equal(p.shapeId, "concise");
    assert.equal(p.systemPromptSource, "shape");
    assert.deepEqual(enc.sourceOf(p.tokens), [system("Be concise."), user("hi")]);
  });

  test("a request's shape overrides the model's default_shape", async () => {
    const enc = new FakeEncoder();
    const m = { ...SHAPED, default_shape: "concise" };
    const p = await buildPrompt(m, 8192, enc, req([user("hi")], { shape: "verbose" }));
    assert.equal(p.shapeId, "verbose");
    assert.deepEqual(enc.sourceOf(p.tokens)[0], system("Explain everything in detail."));
  });

  test("an unknown shape is a 400 naming the param 'shape' and the available shapes", async () => {
    await assertLucenaError(
      () => buildPrompt(SHAPED, 8192, new FakeEncoder(), req([user("hi")], { shape: "nope" })),
      400,
      "shape",
      (e) => {
        assert.match(e.message, /nope/);
        assert.match(e.message, /concise/);
      },
    );
  });

  test("an unknown shape is a 400 even on a model without shapes", async () => {
    await assertLucenaError(
      () => buildPrompt(DEFAULT_MODEL, 8192, new FakeEncoder(), req([user("hi")], { shape: "x" })),
      400,
      "shape",
    );
  });
});

describe("buildPrompt: max_tokens and the output limit", () => {
  test("max_tokens above max_output_tokens is a 400 on 'max_tokens'", async () => {
    const m = model({ max_output_tokens: 100 });
    await assertLucenaError(
      () => buildPrompt(m, 8192, new FakeEncoder(), req([user("hi")], { maxTokens: 101 })),
      400,
      "max_tokens",
      (e) => {
        assert.match(e.message, /101/);
        assert.match(e.message, /100/);
      },
    );
  });

  test("max_tokens equal to max_output_tokens is accepted and returned", async () => {
    const m = model({ max_output_tokens: 100 });
    const p = await buildPrompt(m, 8192, new FakeEncoder(), req([user("hi")], { maxTokens: 100 }));
    assert.equal(p.maxOutputTokens, 100);
  });

  test("maxOutputTokens is the request's max_tokens when given", async () => {
    const p = await buildPrompt(DEFAULT_MODEL, 8192, new FakeEncoder(), req([user("hi")], { maxTokens: 7 }));
    assert.equal(p.maxOutputTokens, 7);
  });

  test("without max_tokens, maxOutputTokens = min(max_output_tokens, context_size - prompt tokens)", async () => {
    const m = model({ system_prompt: null });
    const messages = [user("a b c")];
    const promptLen = costOf(messages); // 3 + 4 + 3 = 10
    // The context is the binding limit.
    let p = await buildPrompt(m, 40, new FakeEncoder(), req(messages));
    assert.equal(p.tokens.length, promptLen);
    assert.equal(p.maxOutputTokens, 40 - promptLen);
    // The output limit is the binding limit.
    p = await buildPrompt({ ...m, max_output_tokens: 5 }, 8192, new FakeEncoder(), req(messages));
    assert.equal(p.maxOutputTokens, 5);
    // DEFAULT_MODEL's limits with its own context size.
    p = await buildPrompt(DEFAULT_MODEL, 8192, new FakeEncoder(), req(messages));
    assert.equal(p.maxOutputTokens, Math.min(16000, 8192 - p.tokens.length));
  });

  test("a shape's max_tokens applies when the request gives none", async () => {
    const p = await buildPrompt(SHAPED, 8192, new FakeEncoder(), req([user("hi")], { shape: "capped" }));
    assert.equal(p.maxOutputTokens, 50);
    const q = await buildPrompt(SHAPED, 8192, new FakeEncoder(), req([user("hi")], { shape: "capped", maxTokens: 9 }));
    assert.equal(q.maxOutputTokens, 9);
  });

  test("max_tokens that leaves no room in the context is a 400 on 'max_tokens'", async () => {
    const m = model({ max_output_tokens: 1000 });
    await assertLucenaError(
      () => buildPrompt(m, 500, new FakeEncoder(), req([user("hi")], { maxTokens: 500 })),
      400,
      "max_tokens",
    );
  });

  test("outputReserve: max_tokens, else min(max_output_tokens, floor(context/4))", async () => {
    assert.equal(outputReserve(DEFAULT_MODEL, 8192, 77), 77);
    assert.equal(outputReserve(DEFAULT_MODEL, 8192, null), 2048);
    assert.equal(outputReserve(DEFAULT_MODEL, 27, null), 6);
    assert.equal(outputReserve(model({ max_output_tokens: 5 }), 8192, null), 5);
  });
});

describe("buildPrompt: the budget, at its exact boundary", () => {
  // u1 costs 4+3, a1 4+2, u2 4+1, plus 3 for the generation prompt: 21 tokens in all.
  const conversation = [user("a b c"), assistant("d e"), user("f")];
  const FULL = costOf(conversation);
  const WITHOUT_FIRST = costOf(conversation.slice(1));
  const base = model({ system_prompt: null });

  test("the fixture is what the boundary tests assume", async () => {
    assert.equal(FULL, 21);
    assert.equal(WITHOUT_FIRST, 14);
  });

  test("max_input_tokens: fits at the budget, trims at budget - 1", async () => {
    const enc = new FakeEncoder();
    let p = await buildPrompt({ ...base, max_input_tokens: FULL }, 8192, enc, req(conversation));
    assert.equal(p.tokens.length, FULL);
    assert.equal(p.keptMessages, 3);
    p = await buildPrompt({ ...base, max_input_tokens: FULL - 1 }, 8192, enc, req(conversation));
    assert.equal(p.tokens.length, WITHOUT_FIRST);
    assert.equal(p.keptMessages, 2);
    assert.deepEqual(enc.sourceOf(p.tokens), conversation.slice(1));
  });

  test("context_size - max_tokens: fits when the prompt equals it, trims when it is one less", async () => {
    let p = await buildPrompt(base, 100, new FakeEncoder(), req(conversation, { maxTokens: 100 - FULL }));
    assert.equal(p.tokens.length, FULL);
    assert.equal(p.keptMessages, 3);
    assert.equal(p.maxOutputTokens, 100 - FULL);
    p = await buildPrompt(base, 100, new FakeEncoder(), req(conversation, { maxTokens: 100 - FULL + 1 }));
    assert.equal(p.tokens.length, WITHOUT_FIRST);
    assert.equal(p.keptMessages, 2);
  });

  test("default reserve floor(context/4): context 28 leaves 21 (fits), context 26 leaves 20 (trims)", async () => {
    let p = await buildPrompt(base, 28, new FakeEncoder(), req(conversation));
    assert.equal(p.keptMessages, 3);
    assert.equal(p.tokens.length, 21);
    assert.equal(p.maxOutputTokens, 28 - 21);
    // 27 - floor(27/4) = 21 still fits.
    p = await buildPrompt(base, 27, new FakeEncoder(), req(conversation));
    assert.equal(p.keptMessages, 3);
    p = await buildPrompt(base, 26, new FakeEncoder(), req(conversation));
    assert.equal(p.keptMessages, 2);
    assert.equal(p.tokens.length, WITHOUT_FIRST);
  });

  test("default reserve is capped by max_output_tokens", async () => {
    // context 26: a quarter would reserve 6 (budget 20, trims); max_output_tokens 5 reserves 5 (budget 21, fits).
    const p = await buildPrompt({ ...base, max_output_tokens: 5 }, 26, new FakeEncoder(), req(conversation));
    assert.equal(p.keptMessages, 3);
    assert.equal(p.tokens.length, 21);
    assert.equal(p.maxOutputTokens, 5);
    const q = await buildPrompt({ ...base, max_output_tokens: 6 }, 26, new FakeEncoder(), req(conversation));
    assert.equal(q.keptMessages, 2);
  });

  test("the smaller of the two limits binds", async () => {
    // context allows 100 - 10 = 90, input limit allows 20: trims.
    let p = await buildPrompt(
      { ...base, max_input_tokens: 20 },
      100,
      new FakeEncoder(),
      req(conversation, { maxTokens: 10 }),
    );
    assert.equal(p.keptMessages, 2);
    // input limit allows 1000, context allows 30 - 10 = 20: trims.
    p = await buildPrompt(
      { ...base, max_input_tokens: 1000 },
      30,
      new FakeEncoder(),
      req(conversation, { maxTokens: 10 }),
    );
    assert.equal(p.keptMessages, 2);
    // both allow 21: fits.
    p = await buildPrompt(
      { ...base, max_input_tokens: 21 },
      31,
      new FakeEncoder(),
      req(conversation, { maxTokens: 10 }),
    );
    assert.equal(p.keptMessages, 3);
  });
});

describe("buildPrompt: trimming", () => {
  const base = model({ system_prompt: null });

  test("drops the fewest oldest messages that make the prompt fit, for every budget", async () => {
    const messages = turns(5); // 11 messages of 6 tokens each
    const per = PER_MESSAGE + 2;
    for (let k = 0; k <= 10; k++) {
      const need = costOf(messages.slice(k));
      assert.equal(need, GENERATION_PROMPT + per * (11 - k));
      // From exactly the room for the last 11-k messages up to one token short of room for one more:
      // k messages are dropped, no more, no fewer.
      for (const budget of [need, need + per - 1]) {
        const enc = new FakeEncoder();
        const p = await buildPrompt({ ...base, max_input_tokens: budget }, 8192, enc, req(messages));
        assert.equal(p.keptMessages, 11 - k, `budget ${budget}`);
        assert.deepEqual(enc.sourceOf(p.tokens), messages.slice(k), `budget ${budget}`);
        assert.equal(p.tokens.length, need);
        assert.ok(p.tokens.length <= budget);
      }
      if (k < 10) {
        // One token short of fitting k drops: exactly one more message goes.
        const enc = new FakeEncoder();
        const p = await buildPrompt({ ...base, max_input_tokens: need - 1 }, 8192, enc, req(messages));
        assert.equal(p.keptMessages, 11 - (k + 1), `budget ${need - 1}`);
        assert.deepEqual(enc.sourceOf(p.tokens), messages.slice(k + 1));
      }
    }
  });

  test("drops whole messages by age, not by size (a long old message is not preferred)", async () => {
    const messages = [user("x"), assistant("one two three four five six seven eight nine ten"), user("y")];
    // Full: 3 + 5 + 14 + 5 = 27. Dropping only the first gives 22; a size-first trimmer would drop the long one.
    const enc = new FakeEncoder();
    const p = await buildPrompt({ ...base, max_input_tokens: 22 }, 8192, enc, req(messages));
    assert.deepEqual(enc.sourceOf(p.tokens), messages.slice(1));
    assert.equal(p.keptMessages, 2);
  });

  test("the request's system messages are never dropped, wherever they are", async () => {
    const messages = [
      system("sys one"),
      user("u0 x"),
      assistant("a0 x"),
      system("mid sys"),
      user("u1 x"),
      assistant("a1 x"),
      user("last"),
    ];
    const enc = new FakeEncoder();
    // Room for everything except the three oldest non-system messages (u0, a0, u1).
    const kept = [messages[0], messages[3], messages[5], messages[6]];
    const p = await buildPrompt({ ...base, max_input_tokens: costOf(kept) }, 8192, enc, req(messages));
    assert.equal(p.systemPromptSource, "request");
    assert.deepEqual(enc.sourceOf(p.tokens), kept);
    assert.equal(p.keptMessages, 4);
  });

  test("the prepended system prompt is never dropped and is not counted in keptMessages", async () => {
    const m = { ...base, system_prompt: "be helpful" };
    const messages = turns(2);
    const preamble = system("be helpful");
    const enc = new FakeEncoder();
    const p = await buildPrompt(
      { ...m, max_input_tokens: costOf([preamble, ...messages.slice(4)]) },
      8192,
      enc,
      req(messages),
    );
    assert.equal(p.systemPromptSource, "default");
    assert.deepEqual(enc.sourceOf(p.tokens), [preamble, messages[4]]);
    assert.equal(p.keptMessages, 1);
  });

  test("the last user message and what follows it are never dropped", async () => {
    const messages = [user("u0"), assistant("a0"), user("question"), assistant("prefill of the answer")];
    const enc = new FakeEncoder();
    const p = await buildPrompt({ ...base, max_input_tokens: costOf(messages.slice(2)) }, 8192, enc, req(messages));
    assert.deepEqual(enc.sourceOf(p.tokens), messages.slice(2));
    assert.equal(p.keptMessages, 2);
    // One token less: the tail cannot be cut, so it is a 400.
    await assertLucenaError(
      () =>
        buildPrompt(
          { ...base, max_input_tokens: costOf(messages.slice(2)) - 1 },
          8192,
          new FakeEncoder(),
          req(messages),
        ),
      400,
      "messages",
    );
  });

  test("a prompt that does not fit even after trimming is a 400 giving both token counts", async () => {
    const m = { ...base, system_prompt: "sys" };
    const messages = [user("old"), assistant("older reply"), user("one two three four five six seven eight nine ten")];
    const minimal = costOf([system("sys"), messages[2]]); // 3 + 5 + 14 = 22
    assert.equal(minimal, 22);
    const budget = 15;
    await assertLucenaError(
      () => buildPrompt({ ...m, max_input_tokens: budget }, 8192, new FakeEncoder(), req(messages)),
      400,
      "messages",
      (e) => {
        assert.ok(e.message.includes(String(minimal)), `message names the prompt's ${minimal} tokens: ${e.message}`);
        assert.ok(e.message.includes(String(budget)), `message names the budget of ${budget}: ${e.message}`);
      },
    );
  });

  test("the budget named in the error is the context-derived one when that binds", async () => {
    const messages = [user("one two three four five six seven eight nine ten")]; // 17 tokens
    // context 25, max_tokens 10: budget 15.
    await assertLucenaError(
      () => buildPrompt(base, 25, new FakeEncoder(), req(messages, { maxTokens: 10 })),
      400,
      "messages",
      (e) => {
        assert.ok(e.message.includes("17"), e.message);
        assert.ok(e.message.includes("15"), e.message);
      },
    );
  });

  test("a conversation without a user message keeps its last message", async () => {
    const messages = [assistant("first thing said"), assistant("second")];
    const enc = new FakeEncoder();
    const p = await buildPrompt({ ...base, max_input_tokens: costOf(messages.slice(1)) }, 8192, enc, req(messages));
    assert.deepEqual(enc.sourceOf(p.tokens), messages.slice(1));
    assert.equal(p.keptMessages, 1);
  });

  test("the same body builds the same prompt (count and completion agree)", async () => {
    const messages = turns(4);
    const m = { ...SHAPED, max_input_tokens: 40 };
    const a = await buildPrompt(m, 8192, new FakeEncoder(), req(messages, { shape: "concise" }));
    const b = await buildPrompt(m, 8192, new FakeEncoder(), req(messages, { shape: "concise" }));
    assert.deepEqual(a, b);
  });
});

describe("countPrompt: the same rules for a model counted elsewhere", () => {
  const base = model({ system_prompt: "be brief", max_input_tokens: 10_000 });

  /** Counts like FakeEncoder, asynchronously, and records the lists it was asked about. */
  class FakeCounter implements PromptCounter {
    readonly kind = "counter";
    readonly calls: ChatMessage[][] = [];
    async count(messages: readonly ChatMessage[]): Promise<number> {
      this.calls.push([...messages]);
      await new Promise((r) => setImmediate(r));
      return costOf(messages);
    }
  }

  test("for every budget it keeps the same messages, with the same count, as buildPrompt", async () => {
    const messages = turns(5);
    for (let budget = costOf(messages.slice(-1)) + PER_MESSAGE + 2; budget <= costOf(messages) + 10; budget++) {
      const m = { ...base, max_input_tokens: budget };
      const built = await buildPrompt(m, 8192, new FakeEncoder(), req(messages));
      const counted = await countPrompt(m, 8192, new FakeCounter(), req(messages));
      assert.equal(counted.promptTokens, built.tokens.length, `budget ${budget}`);
      assert.equal(counted.keptMessages, built.keptMessages, `budget ${budget}`);
      assert.deepEqual(counted.messages, built.messages, `budget ${budget}`);
      assert.equal(counted.maxOutputTokens, built.maxOutputTokens, `budget ${budget}`);
      assert.equal("tokens" in counted, false);
    }
  });

  test("messages is the conversation sent: the resolved system prompt first, then what was kept", async () => {
    const messages = turns(3);
    const counter = new FakeCounter();
    const counted = await countPrompt(
      { ...base, max_input_tokens: costOf([system("be brief"), ...messages.slice(2)]) },
      8192,
      counter,
      req(messages),
    );
    assert.deepEqual(counted.messages, [system("be brief"), ...messages.slice(2)]);
    assert.equal(counted.keptMessages, messages.length - 2);
    assert.ok(
      counter.calls.some((c) => isDeepStrictEqual(c, counted.messages)),
      "the count given is of the list returned",
    );
  });

  test("a prompt that cannot fit is the same 400, and a counter's failure is passed on", async () => {
    const messages = [user("one two three four five six seven eight nine ten")];
    await assert.rejects(
      countPrompt({ ...base, max_input_tokens: 5 }, 8192, new FakeCounter(), req(messages)),
      (err: unknown) => {
        assert.ok(err instanceof LucenaError);
        assert.equal(asHttp(err).status, 400);
        return true;
      },
    );
    const failing: PromptCounter = {
      kind: "counter",
      count: async () => {
        throw new Error("tokenizer unreachable");
      },
    };
    await assert.rejects(countPrompt(base, 8192, failing, req(messages)), /tokenizer unreachable/);
  });

  test("preparePrompt gives tokens for a tokenizer and the conversation for a counter", async () => {
    const messages = [user("hi there")];
    const a = await preparePrompt(base, 8192, new FakeEncoder(), req(messages));
    const b = await preparePrompt(base, 8192, new FakeCounter(), req(messages));
    assert.equal(a.input.kind === "tokens" && a.input.tokens.length, a.promptTokens);
    assert.deepEqual(b.input, { kind: "messages", messages: b.messages, estimated: false });
    assert.equal(b.promptTokens, a.promptTokens);
  });
});

describe("countPrompt: a counter's upper bound stands in for the count only where it changes nothing", () => {
  const base = model({ system_prompt: null, max_input_tokens: 10_000, max_output_tokens: 1000 });
  /** Counts like FakeEncoder; its bound is the count plus a slack. */
  class BoundedCounter implements PromptCounter {
    readonly kind = "counter";
    counts = 0;
    constructor(private readonly slack: number) {}
    async count(messages: readonly ChatMessage[]): Promise<number> {
      this.counts++;
      return costOf(messages);
    }
    bound(messages: readonly ChatMessage[]): number {
      return costOf(messages) + this.slack;
    }
  }
  const messages = turns(3);

  test("with max_tokens given and the bound inside the budget: no count, the whole conversation, estimated", async () => {
    const counter = new BoundedCounter(50);
    const p = await countPrompt(base, 8192, counter, req(messages, { maxTokens: 100 }), false);
    assert.equal(counter.counts, 0);
    assert.equal(p.estimated, true);
    assert.equal(p.promptTokens, costOf(messages) + 50);
    assert.deepEqual(p.messages, messages);
    assert.equal(p.maxOutputTokens, 100);
  });

  test("a bound over the budget falls back to exact counts, and trims exactly as buildPrompt does", async () => {
    const budget = costOf(messages.slice(2));
    const m = { ...base, max_input_tokens: budget };
    const counter = new BoundedCounter(1);
    const p = await countPrompt(m, 8192, counter, req(messages, { maxTokens: 100 }), false);
    const built = await buildPrompt(m, 8192, new FakeEncoder(), req(messages, { maxTokens: 100 }));
    assert.ok(counter.counts > 0);
    assert.equal(p.estimated, false);
    assert.equal(p.promptTokens, built.tokens.length);
    assert.deepEqual(p.messages, built.messages);
    // A bound that fits only thanks to no slack at all: exact, too.
    const tight = await countPrompt(
      { ...base, max_input_tokens: costOf(messages) },
      8192,
      new BoundedCounter(1),
      req(messages, { maxTokens: 100 }),
      false,
    );
    assert.equal(tight.estimated, false);
    assert.equal(tight.keptMessages, messages.length);
  });

  test("without max_tokens, the bound is used only when the model's output limit binds anyway", async () => {
    // Context 8192: the output cap would be 8192 - count, which needs the count.
    let counter = new BoundedCounter(50);
    let p = await countPrompt({ ...base, max_output_tokens: 16_000 }, 8192, counter, req(messages), false);
    assert.equal(p.estimated, false);
    assert.ok(counter.counts > 0);
    assert.equal(p.maxOutputTokens, 8192 - costOf(messages));
    // Output limit 1000 binds whatever the prompt: the bound is enough.
    counter = new BoundedCounter(50);
    p = await countPrompt(base, 8192, counter, req(messages), false);
    assert.equal(p.estimated, true);
    assert.equal(counter.counts, 0);
    assert.equal(p.maxOutputTokens, 1000);
  });

  test("exact (the default, and what /v1/tokens/count uses) always counts", async () => {
    const counter = new BoundedCounter(50);
    const p = await countPrompt(base, 8192, counter, req(messages, { maxTokens: 100 }));
    assert.equal(p.estimated, false);
    assert.equal(p.promptTokens, costOf(messages));
    assert.ok(counter.counts > 0);
  });
});
