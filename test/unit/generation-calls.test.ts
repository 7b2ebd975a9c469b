import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ChatMLChatWrapper, type LlamaContextSequence, type LlamaModel, type Token } from "node-llama-cpp";
import { sampling, type EngineEvent } from "../../src/engines/engine.js";
import { LlamaGeneration, type CallPlan } from "../../src/engines/llama/generation.js";
import type { Member } from "../../src/engines/llama/step-gate.js";
import { toolSyntax } from "../../src/engines/llama/tool-calls.js";

/**
 * How one generation routes its text once tools are offered with tool_choice "auto": text goes out until the
 * calls' trigger, then the calls go out as pieces and the grammar takes over. The model's output is scripted
 * (each token is a piece of text), so the routing is checked whatever a random model would write; that the
 * grammar holds a real model is proven by the engine tests.
 */

const EOG = 0;
const syntax = toolSyntax(new ChatMLChatWrapper()); // "||call: name({…})"

/** A model whose token n is the text pieces[n], and a sequence that generates the tokens given, then EOG. */
function scripted(pieces: string[]) {
  const model = {
    detokenize: (tokens: readonly number[]) => tokens.map((t) => pieces[t] ?? "").join(""),
    isEogToken: (t: number) => t === EOG,
    tokenizer: {},
  } as unknown as LlamaModel;
  let grammarOption: unknown;
  const seq = {
    nextTokenIndex: 0,
    eraseContextTokenRanges: async () => {},
    evaluateWithoutGeneratingNewTokens: async () => {},
    evaluate(_tokens: number[], options: { grammarEvaluationState?: unknown }) {
      grammarOption = options.grammarEvaluationState;
      return (async function* () {
        for (let t = 1; t < pieces.length; t++) yield t;
        yield EOG;
      })();
    },
  } as unknown as LlamaContextSequence;
  const member: Member = { arrive: () => Promise.resolve(0), received: () => {}, leave: () => {} };
  return { model, seq, member, grammar: () => grammarOption };
}

async function run(pieces: string[], plan: CallPlan) {
  const { model, seq, member, grammar } = scripted(pieces);
  const generation = new LlamaGeneration(
    model,
    seq,
    member,
    [1 as Token],
    0,
    100,
    {
      ...sampling({ maxTokens: 100, temperature: 1 }),
      input: { kind: "tokens", tokens: [1] },
      signal: new AbortController().signal,
    },
    null,
    plan,
  );
  const events: EngineEvent[] = [];
  for await (const ev of generation.events()) events.push(ev);
  return { events, grammar };
}

describe("tool_choice auto: text, then calls from the trigger on", () => {
  const grammarState = { started: 0 };
  const plan: CallPlan = {
    syntax,
    names: ["get_weather"],
    forced: false,
    startGrammar: () => {
      grammarState.started++;
      return { the: "grammar" } as unknown as ReturnType<CallPlan["startGrammar"]>;
    },
  };

  test("the text before the trigger goes out as text; the call as pieces; the grammar starts at the trigger", async () => {
    grammarState.started = 0;
    const pieces = ["", "Let me ", "check.", " ||", "call", ": ", "get_weather", "({", '"city": ', '"Paris"', "})"];
    const { events, grammar } = await run(pieces, plan);
    const text = events.flatMap((e) => (e.type === "text" ? [e.text] : [])).join("");
    assert.equal(text, "Let me check. ", "the trigger is never sent as text");
    const calls = events.filter((e) => e.type === "tool_call");
    assert.deepEqual(calls[0] && { index: calls[0].index, name: calls[0].name }, { index: 0, name: "get_weather" });
    assert.equal(calls.map((c) => c.arguments ?? "").join(""), '{"city": "Paris"}');
    const done = events.at(-1);
    assert.ok(done?.type === "done" && done.finishReason === "tool_calls");
    assert.equal(grammarState.started, 1, "the grammar started once, at the trigger");
    const option = grammar();
    assert.ok(typeof option === "function" && (option as () => unknown)() !== undefined);
  });

  test("a token that runs past the trigger: the call is still read, without the grammar", async () => {
    grammarState.started = 0;
    const pieces = ["", "Ok ", "||call: get", "_weather({", '"city": 1', "})"];
    const { events } = await run(pieces, plan);
    assert.equal(events.flatMap((e) => (e.type === "text" ? [e.text] : [])).join(""), "Ok ");
    const calls = events.filter((e) => e.type === "tool_call");
    assert.equal(calls[0]?.name, "get_weather");
    assert.equal(calls.map((c) => c.arguments ?? "").join(""), '{"city": 1}');
    assert.equal(grammarState.started, 0);
  });

  test("no trigger: all text, finish stop, no grammar", async () => {
    grammarState.started = 0;
    const { events } = await run(["", "Just ", "text", " || not a call"], plan);
    assert.equal(events.flatMap((e) => (e.type === "text" ? [e.text] : [])).join(""), "Just text || not a call");
    assert.equal(events.filter((e) => e.type === "tool_call").length, 0);
    const done = events.at(-1);
    assert.ok(done?.type === "done" && done.finishReason === "stop");
    assert.equal(grammarState.started, 0);
  });

  test("a trigger followed by what is not a call: nothing is lost, the trigger included", async () => {
    const { events } = await run(["", "A ", "||call: ", "nonsense"], plan);
    assert.equal(events.flatMap((e) => (e.type === "text" ? [e.text] : [])).join(""), "A ||call: nonsense");
    assert.equal(events.filter((e) => e.type === "tool_call").length, 0);
  });
});
