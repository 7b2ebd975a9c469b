import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { LucenaError } from "../../src/core/errors.js";
import { sampling, type EngineEvent, type OutputFormat } from "../../src/engines/engine.js";
import type { LlamaEngine } from "../../src/engines/llama/llama-engine.js";
import { embeddedEngine, encodeAll } from "../helpers/engine.js";

/**
 * Answers constrained by a grammar, on the real engine and a made model with random weights: whatever the
 * weights, every answer must parse and validate (checked with Ajv, a JSON Schema validator of its own).
 */

/** Objects, arrays, enums, required fields, bounded numbers, nullable values, a $ref, a date. */
const ORDER = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  type: "object",
  properties: {
    id: { type: "integer", minimum: -20, maximum: 1500 },
    status: { enum: ["open", "shipped", "closed"] },
    score: { type: "number", minimum: 0, maximum: 1 },
    note: { anyOf: [{ type: "string", maxLength: 6 }, { type: "null" }] },
    placed: { type: "string", format: "date" },
    customer: {
      type: "object",
      properties: {
        name: { type: "string", minLength: 1, maxLength: 8 },
        vip: { type: "boolean" },
        tier: { type: "integer", exclusiveMinimum: 0, exclusiveMaximum: 4 },
      },
      required: ["name", "vip"],
      additionalProperties: false,
    },
    lines: { type: "array", items: { $ref: "#/$defs/line" }, minItems: 1, maxItems: 3 },
  },
  required: ["id", "status", "score", "customer", "lines"],
  additionalProperties: false,
  $defs: {
    line: {
      type: "object",
      properties: {
        sku: { type: "string", maxLength: 5 },
        qty: { type: "integer", minimum: 1, maximum: 99 },
        tags: { type: "array", items: { enum: ["a", "b"] }, maxItems: 2 },
      },
      required: ["sku", "qty"],
      additionalProperties: false,
    },
  },
} as const;

const ajv = new Ajv2020({ strict: false });
addFormats.default(ajv);

const schemaFormat = (schema: Record<string, unknown>): OutputFormat => ({
  kind: "json_schema",
  schema,
  name: "order",
  strict: true,
  field: "response_format",
});

async function answer(
  engine: LlamaEngine,
  format: OutputFormat,
  seed: number,
): Promise<{ text: string; finish: string; tokens: number }> {
  const prompt = await encodeAll(engine, [{ role: "user", content: `Order number ${seed}, as JSON.` }]);
  let text = "";
  let done: Extract<EngineEvent, { type: "done" }> | undefined;
  for await (const ev of engine.generate({
    ...sampling({ maxTokens: 2048, temperature: 1, seed, format }),
    input: { kind: "tokens", tokens: prompt },
    signal: new AbortController().signal,
  })) {
    if (ev.type === "text") text += ev.text;
    else if (ev.type === "done") done = ev;
  }
  assert.ok(done);
  return { text, finish: done.finishReason, tokens: done.completionTokens };
}

describe("constrained answers on the embedded engine (random weights)", () => {
  test("200 answers to a nested json_schema all parse and validate", async (t) => {
    const engine = await embeddedEngine(t, { parallel: 4, context_size: 4 * 3072 });
    const validate = ajv.compile(ORDER);
    const seeds = Array.from({ length: 200 }, (_, i) => i + 1);
    let next = 0;
    const failures: string[] = [];
    let tokens = 0;
    // Four at a time, one per sequence.
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < seeds.length) {
          const seed = seeds[next++];
          const a = await answer(engine, schemaFormat(ORDER), seed);
          tokens += a.tokens;
          let value: unknown;
          try {
            value = JSON.parse(a.text);
          } catch {
            failures.push(`seed ${seed} (${a.finish}): does not parse: ${a.text.slice(0, 200)}`);
            continue;
          }
          if (a.finish !== "stop") failures.push(`seed ${seed}: finished ${a.finish}`);
          if (!validate(value)) failures.push(`seed ${seed}: ${ajv.errorsText(validate.errors)}: ${a.text}`);
        }
      }),
    );
    assert.deepEqual(failures, [], `${failures.length} of 200 failed`);
    assert.ok(tokens > 200 * 20, `answers of ${tokens / 200} tokens on average`);
  });

  test("json_object: every answer is one JSON object", async (t) => {
    const engine = await embeddedEngine(t, { parallel: 2, context_size: 2 * 3072 });
    for (let seed = 1; seed <= 20; seed++) {
      const a = await answer(engine, { kind: "json_object" }, seed);
      if (a.finish !== "stop") continue; // a free-form object may run to max_tokens: then it is cut, as OpenAI's is
      const value: unknown = JSON.parse(a.text);
      assert.ok(typeof value === "object" && value !== null && !Array.isArray(value), a.text);
    }
  });

  test("a raw GBNF grammar is kept to", async (t) => {
    const engine = await embeddedEngine(t, { parallel: 1 });
    for (let seed = 1; seed <= 10; seed++) {
      const a = await answer(engine, { kind: "grammar", gbnf: 'root ::= ("yes" | "no") " " [0-9]{2}' }, seed);
      assert.match(a.text, /^(yes|no) [0-9]{2}$/);
      assert.equal(a.finish, "stop");
    }
  });

  test("a schema that cannot be followed, a grammar that does not parse, ignore_eos: 400s before admission", async (t) => {
    const engine = await embeddedEngine(t, { parallel: 1 });
    const prompt = await encodeAll(engine, [{ role: "user", content: "Hi" }]);
    const refusal = (format: OutputFormat, over: { ignoreEos?: boolean } = {}) => {
      try {
        void engine.generate({
          ...sampling({ maxTokens: 8, temperature: 1, format, ...over }),
          input: { kind: "tokens", tokens: prompt },
          signal: new AbortController().signal,
        });
      } catch (err) {
        assert.ok(err instanceof LucenaError);
        return { message: err.message, param: err.param };
      }
      assert.fail("admitted");
    };
    const pattern = refusal(schemaFormat({ type: "object", properties: { a: { type: "string", pattern: "^x" } } }));
    assert.equal(pattern.param, "response_format");
    assert.match(pattern.message, /'pattern'/);
    assert.match(pattern.message, /\/properties\/a\/pattern/);
    const huge = refusal(
      schemaFormat({
        type: "array",
        items: { type: "object", properties: { a: { type: "integer" } } },
        minItems: 200000,
      }),
    );
    assert.equal(huge.param, "response_format");
    assert.match(huge.message, /too large/);
    const bad = refusal({ kind: "grammar", gbnf: "root ::= undefined-rule" });
    assert.equal(bad.param, "grammar");
    const eos = refusal({ kind: "json_object" }, { ignoreEos: true });
    assert.equal(eos.param, "ignore_eos");
    assert.deepEqual(engine.stats().busy, 0);
  });
});
