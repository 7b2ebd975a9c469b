import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Template } from "@huggingface/jinja";
import { resolveChatWrapper, type LlamaModel } from "node-llama-cpp";
import type { ChatMessage, ToolDef } from "../../src/api/chat-request.js";
import { PromptTokenizer } from "../../src/engines/llama/prompt-tokenizer.js";
import { llamaRuntime } from "../../src/engines/llama/runtime.js";
import { CallReader, parseToolCalls, toolSyntax, type ToolSyntax } from "../../src/engines/llama/tool-calls.js";
import { createLogger } from "../../src/observability/log.js";
import { testModel } from "../helpers/models.js";
import { NO_SHARED, repoRoot, vocabDir } from "../helpers/paths.js";

/**
 * Made models whose GGUF carries a real chat template that knows tools (Qwen 2.5's Hermes-style one, Llama 3.1's,
 * Mistral Nemo's), with a real vocabulary: the tools, a conversation's calls and their results are rendered the
 * way the template itself renders them (the template run by a Jinja engine is the reference), and the syntax the
 * engine holds a call to is the one the template writes calls in.
 */

const TOOLS: ToolDef[] = [
  {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 10 }, days: { type: "integer", minimum: 1, maximum: 7 } },
      required: ["city", "days"],
    },
    strict: false,
  },
];

/** Mistral's template wants call ids of 9 characters. */
const CALL_ID = "abc123xyz";
const ASK: ChatMessage[] = [{ role: "user", content: "Weather in Paris?" }];
const CONVERSATION: ChatMessage[] = [
  ...ASK,
  {
    role: "assistant",
    content: "",
    tool_calls: [
      { id: CALL_ID, type: "function", function: { name: "get_weather", arguments: '{"city":"Paris","days":2}' } },
    ],
  },
  { role: "tool", tool_call_id: CALL_ID, content: '{"temp": 21}' },
];

interface Case {
  template: string;
  vocab?: "phi-3" | "deepseek-coder";
  /** node-llama-cpp's wrapper that renders it (its `wrapperName`). */
  wrapper: string;
  syntax: Partial<ToolSyntax>;
  /** Where the tools are shown: the same text in our prompt and in the template's own rendering. */
  toolSection: RegExp;
  /** The whole prompt equals the template's rendering (false where the vocabulary re-spaces special text). */
  exact: boolean;
  /** How a call of the conversation is shown. */
  call: RegExp;
  /** How the prompt ends after a tool's result: the assistant goes on, with nothing in between. */
  afterResult: string;
  /** An answer written in the template's format (two calls where the format has parallel calls). */
  recorded: string;
}

const CASES: Case[] = [
  {
    template: "qwen2.5",
    wrapper: "JinjaTemplate",
    syntax: { trigger: '<tool_call>\n{"name": "', paramsPrefix: '", "arguments": ', suffix: "}\n</tool_call>" },
    toolSection: /<tools>\n([^]*)\n<\/tools>/,
    exact: true,
    call: /<tool_call>\n\{"name": "get_weather", "arguments": \{"city": ?"Paris", ?"days": ?2\}\}\n<\/tool_call>/,
    afterResult: '{"temp": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n',
    recorded:
      '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>\n' +
      '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome", "days": 1}}\n</tool_call>',
  },
  {
    template: "llama3.1",
    vocab: "deepseek-coder",
    wrapper: "JinjaTemplate",
    // The closing brace is the call's, though node-llama-cpp reads it as the start of the result.
    syntax: { trigger: '{"name": "', paramsPrefix: '", "parameters": ', suffix: "}", between: null },
    toolSection: /arguments that best answers the given prompt\.\n\n([^]*)\n\nWeather in Paris\?/,
    exact: true,
    call: /<\|start_header_id\|>assistant<\|end_header_id\|>\n\n\{"name": "get_weather", "parameters": \{"city": "Paris", "days": 2\}\}<\|eot_id\|>/,
    afterResult: '21}"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    recorded: '{"name": "get_weather", "parameters": {"city": "Paris", "days": 2}}',
  },
  {
    template: "mistral-nemo",
    vocab: "phi-3",
    wrapper: "Mistral",
    syntax: { trigger: '[TOOL_CALLS][{"name": "', paramsPrefix: '", "arguments": ', suffix: "}", between: ", " },
    toolSection: /\[AVAILABLE_TOOLS\](.*?) ?\[\/AVAILABLE_TOOLS\]/,
    exact: false,
    call: /\[TOOL_CALLS\]\[\{"name": "get_weather", "arguments": \{"city": "Paris", "days": 2\}\}\]/,
    afterResult: "[/TOOL_RESULTS]",
    recorded:
      '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}, ' +
      '{"name": "get_weather", "arguments": {"city": "Rome", "days": 1}}]',
  },
];

/** The conversation as a Jinja chat template takes it (Hugging Face's convention: arguments as an object). */
function templateMessages(messages: readonly ChatMessage[]): unknown[] {
  return messages.map((m) =>
    m.role === "assistant" && m.tool_calls
      ? {
          ...m,
          tool_calls: m.tool_calls.map((c) => ({
            ...c,
            function: { name: c.function.name, arguments: JSON.parse(c.function.arguments) as unknown },
          })),
        }
      : m,
  );
}

for (const c of CASES) {
  describe(
    `${c.template}'s template, written into a made model`,
    { skip: c.vocab && !vocabDir ? NO_SHARED : false },
    () => {
      let model: LlamaModel;
      let tokenizer: PromptTokenizer;
      let wrapperName: string;
      let syntax: ToolSyntax;
      let render: (messages: readonly ChatMessage[], tools: readonly ToolDef[]) => string;
      const prompt = async (messages: readonly ChatMessage[], tools: readonly ToolDef[] | null) => {
        const tokens = await tokenizer.encode(messages, Infinity, tools);
        assert.ok(Array.isArray(tokens));
        return model.detokenize(tokens, true);
      };
      before(async () => {
        const llama = await llamaRuntime(createLogger("silent"));
        model = await llama.loadModel({
          modelPath: testModel({ template: c.template, vocab: c.vocab }),
          vocabOnly: true,
        });
        const wrapper = resolveChatWrapper(model);
        wrapperName = wrapper.wrapperName;
        syntax = toolSyntax(wrapper);
        tokenizer = new PromptTokenizer(model, wrapper);
        const template = new Template(
          readFileSync(join(repoRoot, "test", "fixtures", "templates", `${c.template}.jinja`), "utf8"),
        );
        const bos = model.tokens.bos === null ? "" : model.detokenize([model.tokens.bos], true);
        render = (messages, tools) =>
          template.render({
            messages: templateMessages(messages),
            tools: tools.map((t) => ({
              type: "function",
              function: { name: t.name, description: t.description, parameters: t.parameters },
            })),
            add_generation_prompt: true,
            bos_token: bos,
            eos_token: "</s>",
          });
      });
      after(() => model.dispose());

      test("the template is matched to its wrapper and call syntax", () => {
        assert.equal(wrapperName, c.wrapper);
        for (const [k, v] of Object.entries(c.syntax)) assert.deepEqual(syntax[k as keyof ToolSyntax], v, k);
      });

      test("the tools are shown as the template shows them; no tools, no tool section", async () => {
        const ours = await prompt(ASK, TOOLS);
        const theirs = render(ASK, TOOLS);
        const section = c.toolSection.exec(theirs)?.[1];
        assert.ok(section?.includes('"get_weather"'), `the template shows the tool: ${theirs}`);
        assert.equal(c.toolSection.exec(ours)?.[1], section, ours);
        if (c.exact) assert.equal(ours, theirs);
        const without = await prompt(ASK, null);
        assert.ok(!c.toolSection.test(without) && !without.includes("get_weather"), without);
      });

      test("an answer in the format is read into calls, whole and one character at a time", () => {
        const expected = [{ name: "get_weather", arguments: '{"city": "Paris", "days": 2}' }];
        if (syntax.between !== null) expected.push({ name: "get_weather", arguments: '{"city": "Rome", "days": 1}' });
        assert.ok(c.recorded.startsWith(syntax.trigger));
        assert.deepEqual(parseToolCalls(c.recorded.slice(syntax.trigger.length), syntax, ["get_weather"]), expected);
        const reader = new CallReader(syntax, ["get_weather"], false);
        const read: { name: string; arguments: string }[] = [];
        for (const ch of c.recorded) {
          for (const p of reader.push(ch)) {
            if (p.name !== undefined) read[p.index] = { name: p.name, arguments: "" };
            else read[p.index].arguments += p.arguments ?? "";
          }
        }
        assert.deepEqual(read, expected);
      });

      test("a call and its result are rendered, and the assistant's turn follows the result", async () => {
        const ours = await prompt(CONVERSATION, TOOLS);
        assert.match(ours, c.call);
        assert.ok(ours.includes("21}"), "the result is shown");
        assert.ok(ours.endsWith(c.afterResult), JSON.stringify(ours.slice(-80)));
        assert.ok(render(CONVERSATION, TOOLS).trimEnd().endsWith(c.afterResult.trimEnd()), "as the template ends it");
        // What the template writes after a call's arguments closes it: the syntax holds a call to that.
        assert.ok(
          ours.includes(
            `${syntax.prefix}get_weather${syntax.paramsPrefix}{"city": "Paris", "days": 2}${syntax.suffix}`,
          ),
          "the call, written in the syntax generation is held to",
        );
      });
    },
  );
}
