import assert from "node:assert/strict";
import { generateText, stepCountIs, tool, type LanguageModel } from "ai";
import { z } from "zod";

/** A tool's arguments as the tests ask for them: small enough for a random model to finish. */
export const City = z.object({ city: z.string().max(12), days: z.int().min(1).max(7) });

/**
 * The Vercel AI SDK's agent loop on `model`: a first step forced to call the weather tool, its result sent back,
 * then an answer in a second step. Checks that the calls the tool received are valid, and returns the result.
 */
export async function twoStepToolLoop(model: LanguageModel) {
  const seen: unknown[] = [];
  const result = await generateText({
    model,
    messages: [{ role: "user", content: "Weather in Paris for 3 days?" }],
    tools: {
      weather: tool({
        description: "The weather in a city",
        inputSchema: City,
        execute: (input) => {
          seen.push(input);
          return Promise.resolve({ temp: 21 });
        },
      }),
    },
    prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? "required" : "none" }),
    stopWhen: stepCountIs(3),
    maxOutputTokens: 200,
    seed: 5,
  });
  assert.equal(result.steps.length, 2);
  assert.equal(result.steps[0]?.finishReason, "tool-calls");
  assert.equal(seen.length, result.steps[0]?.toolCalls.length);
  for (const input of seen) assert.deepEqual(City.parse(input), input);
  assert.ok(result.text.length > 0);
  return result;
}
