import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import OpenAI from "openai";
import type { ChatCompletionMessageParam, ChatCompletionTool } from "openai/resources/chat/completions";
import { testModel } from "../helpers/models.js";
import { NO_SHARED, vocabDir } from "../helpers/paths.js";
import { startServer, type RunningServer } from "../helpers/server.js";

/**
 * A round trip of tool use on the real server, for each chat template the project writes into made models (Qwen
 * 2.5's, Llama 3.1's, Mistral Nemo's): a forced call comes back valid in the OpenAI shape, its result is sent back
 * with the call's own id, and the conversation goes on; the count of that prompt is its completion's
 * prompt_tokens.
 */

const MODEL = "lucena-coder-latest";
const WEATHER = {
  type: "object",
  properties: { city: { type: "string", maxLength: 12 }, days: { type: "integer", minimum: 1, maximum: 7 } },
  required: ["city", "days"],
  additionalProperties: false,
} as const;
const TOOLS: ChatCompletionTool[] = [
  { type: "function", function: { name: "get_weather", description: "The weather in a city", parameters: WEATHER } },
];
const validate = new Ajv2020({ strict: false }).compile(WEATHER);
const ASK: ChatCompletionMessageParam[] = [{ role: "user", content: "What is the weather in Paris?" }];

const CASES: { template: string; vocab?: "phi-3" | "deepseek-coder" }[] = [
  { template: "qwen2.5" },
  { template: "llama3.1", vocab: "deepseek-coder" },
  { template: "mistral-nemo", vocab: "phi-3" },
];

for (const c of CASES) {
  describe(
    `tool use on a model with ${c.template}'s template`,
    { skip: c.vocab && !vocabDir ? NO_SHARED : false },
    () => {
      let server: RunningServer;
      let client: OpenAI;
      before(async () => {
        server = await startServer({
          model: testModel({ template: c.template, vocab: c.vocab }),
          config: { models: [{ parallel: 1, context_size: 4096 }] },
        });
        client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: server.key, maxRetries: 0 });
      });
      after(async () => {
        assert.equal(await server.stop(), 0);
      });

      test("a forced call, its result sent back, the conversation goes on; count == prompt_tokens", async () => {
        for (let seed = 1; seed <= 3; seed++) {
          const res = await client.chat.completions.create({
            model: MODEL,
            messages: ASK,
            tools: TOOLS,
            tool_choice: "required",
            // Random weights would go on adding calls until max_tokens; one call is what is checked here.
            parallel_tool_calls: false,
            max_tokens: 300,
            seed,
          });
          const choice = res.choices[0];
          assert.equal(choice?.finish_reason, "tool_calls");
          const calls = choice.message.tool_calls ?? [];
          assert.equal(calls.length, 1);
          for (const call of calls) {
            assert.ok(call.type === "function" && call.function.name === "get_weather");
            assert.ok(validate(JSON.parse(call.function.arguments)), call.function.arguments);
          }

          const conversation: ChatCompletionMessageParam[] = [
            ...ASK,
            { role: "assistant", content: null, tool_calls: calls },
            ...calls.map((call): ChatCompletionMessageParam => ({
              role: "tool",
              tool_call_id: call.id,
              content: '{"temp": 21}',
            })),
          ];
          const body = { model: MODEL, messages: conversation, tools: TOOLS, max_tokens: 8, seed };
          const next = await client.chat.completions.create(body);
          assert.ok(next.choices[0]?.finish_reason, "the conversation goes on");
          const count = await fetch(`${server.url}/v1/tokens/count`, {
            method: "POST",
            headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" },
            body: JSON.stringify(body),
          });
          const counted = (await count.json()) as { usage: { prompt_tokens: number } };
          assert.equal(counted.usage.prompt_tokens, next.usage?.prompt_tokens);
          assert.ok(counted.usage.prompt_tokens > (res.usage?.prompt_tokens ?? Infinity), "the call and result add");
        }
      });
    },
  );
}
