import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import {
  GeneralChatWrapper,
  Llama3_1ChatWrapper,
  MistralChatWrapper,
  QwenChatWrapper,
  type ChatWrapper,
} from "node-llama-cpp";
import type { ToolSet } from "../../src/api/chat-request.js";
import {
  CallReader,
  parseToolCalls,
  toolCallGrammar,
  toolSyntax,
  type CallPiece,
  type ToolSyntax,
} from "../../src/engines/llama/tool-calls.js";
import { StopMatcher } from "../../src/engines/stop-sequences.js";
import { grammarMatcher } from "../helpers/grammar.js";

/**
 * Tool calls as models of each family write them (recorded outputs), read with the syntax node-llama-cpp's chat
 * wrapper for that family declares, and held to by the grammar made from it.
 */

const SET: ToolSet = {
  tools: [
    {
      name: "get_weather",
      description: "Weather in a city",
      parameters: {
        type: "object",
        properties: { city: { type: "string" }, days: { type: "integer", minimum: 1, maximum: 7 } },
        required: ["city", "days"],
      },
      strict: false,
    },
    { name: "get", description: "", parameters: { type: "object", properties: {} }, strict: false },
  ],
  choice: "required",
  parallel: true,
};

/** What each family's model writes for two calls, after the trigger (the start of the calls). */
const RECORDED: { family: string; wrapper: ChatWrapper; output: string }[] = [
  {
    family: "Qwen 2.5 / Hermes",
    wrapper: new QwenChatWrapper(),
    output:
      '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>\n' +
      '<tool_call>\n{"name": "get", "arguments": {}}\n</tool_call>',
  },
  {
    family: "Llama 3.1",
    wrapper: new Llama3_1ChatWrapper(),
    output: '<function=get_weather>{"city": "Paris", "days": 3}</function><|eom_id|>',
  },
  {
    family: "Mistral",
    wrapper: new MistralChatWrapper(),
    output:
      '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}, {"name": "get", "arguments": {}}]',
  },
  {
    family: "generic (node-llama-cpp's fallback)",
    wrapper: new GeneralChatWrapper(),
    output: "",
  },
];

let takes: (grammar: string, text: string) => boolean;
before(async () => {
  takes = await grammarMatcher();
});

/** The generic syntax's calls, written the way the syntax says. */
function written(syntax: ToolSyntax, calls: [string, string][]): string {
  return (
    syntax.trigger +
    calls
      .slice(0, syntax.between === null ? 1 : calls.length)
      .map(([name, args]) => `${name}${syntax.paramsPrefix}${args}${syntax.suffix}`)
      .join((syntax.between ?? "") + syntax.prefix)
  );
}

describe("tool calls of each family", () => {
  for (const { family, wrapper, output } of RECORDED) {
    test(`${family}: the recorded calls are read, and the grammar takes them`, () => {
      const syntax = toolSyntax(wrapper);
      const text =
        output ||
        written(syntax, [
          ["get_weather", '{"city": "Paris", "days": 3}'],
          ["get", "{}"],
        ]);
      assert.ok(
        text.startsWith(syntax.trigger),
        `${JSON.stringify(text)} starts with ${JSON.stringify(syntax.trigger)}`,
      );
      const generated = text.replace(/<\|eom_id\|>$/, "");
      const calls = parseToolCalls(generated.slice(syntax.trigger.length), syntax, ["get_weather", "get"]);
      const expected = [{ name: "get_weather", arguments: '{"city": "Paris", "days": 3}' }];
      if (syntax.between !== null && !text.includes("<|eom_id|>")) expected.push({ name: "get", arguments: "{}" });
      assert.deepEqual(calls, expected);
      for (const c of calls) assert.doesNotThrow(() => JSON.parse(c.arguments));
      // The forced grammar takes the calls as written (the special tokens as their text; the model's
      // end-of-generation token, Llama 3.1's <|eom_id|>, ends the answer, so it never reaches the text parsed)…
      const grammar = toolCallGrammar(syntax, SET, true);
      assert.equal(takes(grammar, text), true, `${grammar}\n${text}`);
      // …and refuses arguments that break the schema, or a tool that is not offered.
      assert.equal(takes(grammar, text.replace('"days": 3', '"days": 9')), false);
      assert.equal(takes(grammar, text.replace("get_weather", "get_time")), false);
    });
  }

  test("read as generated, one character at a time: names first, then arguments in pieces, the same calls", () => {
    for (const { wrapper, output } of RECORDED.slice(0, 3)) {
      const syntax = toolSyntax(wrapper);
      const text = output.replace(/<\|eom_id\|>$/, "");
      const reader = new CallReader(syntax, ["get_weather", "get"], false);
      const pieces: CallPiece[] = [];
      for (const ch of text) pieces.push(...reader.push(ch));
      const joined: { name: string; arguments: string }[] = [];
      for (const p of pieces) {
        if (p.name !== undefined) {
          assert.equal(p.arguments, undefined, "a call's first piece is its name");
          joined[p.index] = { name: p.name, arguments: "" };
        } else joined[p.index].arguments += p.arguments ?? "";
      }
      assert.deepEqual(joined, parseToolCalls(text.slice(syntax.trigger.length), syntax, ["get_weather", "get"]));
      assert.ok(pieces.filter((p) => p.arguments !== undefined).length > joined.length, "arguments came in pieces");
    }
  });

  test("a named tool_choice: only that tool", () => {
    const syntax = toolSyntax(new QwenChatWrapper());
    const grammar = toolCallGrammar(syntax, { ...SET, choice: { name: "get" } }, true);
    assert.equal(takes(grammar, `${syntax.trigger}get${syntax.paramsPrefix}{}${syntax.suffix}`), true);
    assert.equal(
      takes(grammar, `${syntax.trigger}get_weather${syntax.paramsPrefix}{"city": "a", "days": 1}${syntax.suffix}`),
      false,
    );
  });

  test("parallel_tool_calls false: one call", () => {
    const syntax = toolSyntax(new QwenChatWrapper());
    const one = toolCallGrammar(syntax, { ...SET, parallel: false }, true);
    const call = `get${syntax.paramsPrefix}{}${syntax.suffix}`;
    assert.equal(takes(one, syntax.trigger + call), true);
    assert.equal(takes(one, syntax.trigger + call + (syntax.between ?? "") + syntax.prefix + call), false);
  });

  test("the trigger is found at every split of the streamed text, and nothing of it is sent as text", () => {
    const syntax = toolSyntax(new QwenChatWrapper());
    const text = `Let me look that up.\n${RECORDED[0].output}`;
    for (let at = 0; at <= text.length; at++) {
      const m = new StopMatcher([syntax.trigger]);
      let sent = "";
      let after: string | null = null;
      for (const piece of [text.slice(0, at), text.slice(at)]) {
        if (after !== null) {
          after += piece;
          continue;
        }
        const r = m.push(piece);
        sent += r.emit;
        if (r.stopped) after = m.after;
      }
      assert.equal(sent, "Let me look that up.\n", `split at ${at}`);
      assert.deepEqual(
        parseToolCalls(after ?? "", syntax, ["get_weather", "get"]).map((c) => c.name),
        ["get_weather", "get"],
        `split at ${at}`,
      );
    }
  });
});
