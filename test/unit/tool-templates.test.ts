import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { resolveChatWrapper, type LlamaModel } from "node-llama-cpp";
import type { ChatMessage, ToolDef } from "../../src/api/chat-request.js";
import { sampling } from "../../src/engines/engine.js";
import { PromptTokenizer } from "../../src/engines/llama/prompt-tokenizer.js";
import { llamaRuntime } from "../../src/engines/llama/runtime.js";
import { createLogger } from "../../src/observability/log.js";
import { embeddedEngine, encodeAll } from "../helpers/engine.js";
import { testModel } from "../helpers/models.js";

/**
 * A made model whose GGUF carries Qwen 2.5's chat template (Hermes-style tool calls): the tools and a
 * conversation's calls and results are rendered the way that template renders them, and a forced call on the
 * real engine comes back as a call, whatever the random weights.
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

const CONVERSATION: ChatMessage[] = [
  { role: "user", content: "Weather in Paris?" },
  {
    role: "assistant",
    content: "",
    tool_calls: [
      { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris","days":2}' } },
    ],
  },
  { role: "tool", tool_call_id: "call_1", content: '{"temp": 21}' },
];

describe("Qwen 2.5's template, written into a made model", () => {
  const path = testModel({ template: "qwen2.5" });
  let model: LlamaModel;
  let prompt: (messages: ChatMessage[], tools: ToolDef[] | null) => Promise<string>;
  before(async () => {
    const llama = await llamaRuntime(createLogger("silent"));
    model = await llama.loadModel({ modelPath: path, vocabOnly: true });
    const tokenizer = new PromptTokenizer(model, resolveChatWrapper(model));
    prompt = async (messages, tools) => {
      const tokens = await tokenizer.encode(messages, Infinity, tools);
      assert.ok(Array.isArray(tokens));
      return model.detokenize(tokens, true);
    };
  });
  after(() => model.dispose());

  test("the tools are shown as the template shows them: JSON within <tools></tools>", async () => {
    const text = await prompt([{ role: "user", content: "Weather in Paris?" }], TOOLS);
    assert.match(text, /<tools>\n\{"type": ?"function", ?"function": ?\{"name": ?"get_weather"/);
    assert.match(text, /<\/tools>/);
    assert.ok(text.endsWith("<|im_start|>assistant\n"), JSON.stringify(text.slice(-60)));
    const without = await prompt([{ role: "user", content: "Weather in Paris?" }], null);
    assert.ok(!without.includes("<tools>"), "no tools, no tool section");
  });

  test("a call and its result are rendered as <tool_call> and <tool_response>", async () => {
    const text = await prompt(CONVERSATION, TOOLS);
    assert.match(
      text,
      /<tool_call>\n\{"name": "get_weather", "arguments": \{"city": ?"Paris", ?"days": ?2\}\}\n<\/tool_call>/,
    );
    assert.match(text, /<tool_response>\n\{"temp": 21\}\n<\/tool_response>/);
  });

  test("a forced call on the real engine: Hermes' syntax, arguments valid", async (t) => {
    const engine = await embeddedEngine(t, { source: path, parallel: 1 });
    const tokens = await encodeAll(engine, [{ role: "user", content: "Weather in Paris?" }]);
    for (let seed = 1; seed <= 5; seed++) {
      const calls: { name: string; arguments: string }[] = [];
      let finish = "";
      for await (const ev of engine.generate({
        ...sampling({
          maxTokens: 300,
          temperature: 1,
          seed,
          tools: { tools: TOOLS, choice: "required", parallel: false },
        }),
        input: { kind: "tokens", tokens },
        signal: new AbortController().signal,
      })) {
        if (ev.type === "tool_call") {
          if (ev.name !== undefined) calls[ev.index] = { name: ev.name, arguments: "" };
          calls[ev.index].arguments += ev.arguments ?? "";
        }
        if (ev.type === "done") finish = ev.finishReason;
      }
      assert.equal(finish, "tool_calls");
      assert.equal(calls.length, 1);
      assert.equal(calls[0]?.name, "get_weather");
      const args = JSON.parse(calls[0]?.arguments ?? "") as { city: string; days: number };
      assert.ok(typeof args.city === "string" && args.city.length <= 10);
      assert.ok(Number.isInteger(args.days) && args.days >= 1 && args.days <= 7);
    }
  });
});
