import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { jsonObjectGrammar, jsonSchemaGrammar, literal, SchemaRefusal } from "../../src/structured/json-grammar.js";
import { grammarMatcher } from "../helpers/grammar.js";

/**
 * The converter's grammars, read by llama.cpp's own grammar parser and matcher (the one generation uses): each
 * schema's grammar must take the texts that are valid and none that are not.
 */

let takes: (grammar: string, text: string) => boolean;
before(async () => {
  takes = await grammarMatcher();
});

function check(schema: unknown, valid: string[], invalid: string[]): void {
  const grammar = jsonSchemaGrammar(schema);
  for (const text of valid) assert.equal(takes(grammar, text), true, `takes ${text}\n${grammar}`);
  for (const text of invalid) assert.equal(takes(grammar, text), false, `refuses ${text}\n${grammar}`);
}

function refusal(schema: unknown): SchemaRefusal {
  try {
    jsonSchemaGrammar(schema);
  } catch (err) {
    if (err instanceof SchemaRefusal) return err;
    throw err;
  }
  assert.fail(`accepted ${JSON.stringify(schema)}`);
}

describe("JSON Schema to grammar: what is enforced", () => {
  test("types, lists of types, nullable, const and enum (filtered by type)", () => {
    check({ type: "string" }, ['"a b"', '"\\n\\u00e9"', '""'], ["a", "1", "null", '"\n"']);
    check({ type: ["integer", "null"] }, ["12", "-3", "null"], ["1.5", '"1"', "01"]);
    check({ type: "boolean", nullable: true }, ["true", "null"], ["1"]);
    check({ const: { a: [1, "x"] } }, ['{"a":[1,"x"]}'], ['{"a": [1, "x"]}', "null"]);
    check({ type: "string", enum: ["a", 1, "b"] }, ['"a"', '"b"'], ["1", '"c"']);
  });

  test("objects: every property, in order, nothing else; whitespace between tokens", () => {
    const schema = {
      type: "object",
      properties: { a: { type: "integer" }, "b/c": { type: "string" } },
      required: ["a"],
      additionalProperties: false,
    };
    check(
      schema,
      ['{"a":1,"b/c":"x"}', '{ "a" : 1 ,\n  "b/c": "x" }'],
      ['{"a":1}', '{"b/c":"x","a":1}', '{"a":1,"b/c":"x","d":2}'],
    );
    check({ type: "object", properties: {} }, ["{}", "{ }"], ['{"a":1}']);
    check({ type: "object" }, ["{}", '{"any":[1,{"b":null}]}'], ["[]"]);
  });

  test("arrays: items, minItems, maxItems, prefixItems", () => {
    check(
      { type: "array", items: { type: "integer" }, minItems: 1, maxItems: 3 },
      ["[1]", "[1, 2,3]"],
      ["[]", "[1,2,3,4]"],
    );
    check({ type: "array", items: { type: "integer" }, minItems: 2 }, ["[1,2]", "[1,2,3,4,5]"], ["[1]"]);
    check(
      { type: "array", prefixItems: [{ type: "string" }, { type: "integer" }], items: false },
      ['["a",1]'],
      ['["a"]', '[1,"a"]'],
    );
    check({ type: "array", maxItems: 0 }, ["[]"], ["[1]"]);
    // A counted repetition of an object: its item is a rule, so llama.cpp expands 400 references, not 400 objects.
    const many = { type: "array", minItems: 400, items: { type: "object", properties: { w: { type: "string" } } } };
    const text = `[${Array.from({ length: 400 }, () => '{"w":"x"}').join(",")}]`;
    check(many, [text], [text.replace('{"w":"x"},', "")]);
  });

  test("strings: lengths (an escape is one character), formats", () => {
    check({ type: "string", minLength: 2, maxLength: 3 }, ['"ab"', '"a\\nb"', '"abc"'], ['"a"', '"abcd"']);
    check({ type: "string", format: "uuid" }, ['"123e4567-e89b-12d3-a456-426614174000"'], ['"123e4567"']);
    check(
      { type: "string", format: "date" },
      ['"2024-01-31"', '"2023-02-28"', '"2024-04-30"'],
      ['"2024-02-30"', '"2024-04-31"', '"2024-13-01"'],
    );
    check(
      { type: "string", format: "date-time" },
      ['"2024-01-31T23:59:59Z"', '"2024-01-31T00:00:00.123+02:00"'],
      ['"2024-01-31"'],
    );
  });

  test("integers: exact bounds, exclusive bounds, at most 15 digits, no exponent", () => {
    check(
      { type: "integer", minimum: -20, maximum: 1500 },
      ["-20", "0", "7", "1500", "999"],
      ["-21", "1501", "-0", "1e3"],
    );
    check({ type: "integer", exclusiveMinimum: 0, exclusiveMaximum: 4 }, ["1", "3"], ["0", "4"]);
    check({ type: "integer", minimum: 10 }, ["10", "999999999999999"], ["9", "1000000000000000"]);
    check({ type: "integer" }, ["-999999999999999", "0"], ["1000000000000000", "1e5", "1.0"]);
  });

  test("numbers: no exponent; whole bounds from 0 up", () => {
    check({ type: "number" }, ["1.5", "-0.25", "3"], ["1e5", "1.", ".5"]);
    check({ type: "number", minimum: 0, maximum: 1 }, ["0", "0.999", "1", "1.00"], ["1.01", "-0.1", "2"]);
    check({ type: "number", minimum: 5 }, ["5", "5.5", "100"], ["4.99"]);
  });

  test("anyOf, oneOf, allOf of objects, $ref with recursion and with 'definitions'", () => {
    check({ anyOf: [{ type: "integer" }, { type: "string", maxLength: 1 }] }, ["1", '"a"'], ['"ab"']);
    check({ oneOf: [{ const: "a" }, { const: "b" }] }, ['"a"', '"b"'], ['"c"']);
    check(
      {
        allOf: [{ type: "object", properties: { a: { type: "integer" } } }, { $ref: "#/$defs/b" }],
        $defs: { b: { properties: { b: { type: "boolean" } } } },
      },
      ['{"a":1,"b":true}'],
      ['{"a":1}'],
    );
    const tree = {
      $ref: "#/definitions/node",
      definitions: {
        node: {
          type: "object",
          properties: {
            v: { type: "integer", minimum: 0, maximum: 9 },
            kids: { type: "array", items: { $ref: "#/definitions/node" }, maxItems: 2 },
          },
        },
      },
    };
    check(tree, ['{"v":1,"kids":[{"v":2,"kids":[]}]}'], ['{"v":10,"kids":[]}', '{"v":1,"kids":[{"v":2}]}']);
  });

  test("json_object: one object", () => {
    const grammar = jsonObjectGrammar();
    for (const text of ["{}", '{"a": [1, 2.5, "x", null, true, {"b": {}}]}'])
      assert.equal(takes(grammar, text), true, text);
    for (const text of ["[]", '"a"', "1", '{"a"}']) assert.equal(takes(grammar, text), false, text);
  });

  test("literal() escapes what GBNF needs escaped", () => {
    const grammar = `root ::= ${literal('a"b\\c\n\t\u0001é')}`;
    assert.equal(takes(grammar, 'a"b\\c\n\t\u0001é'), true);
  });
});

describe("JSON Schema to grammar: what is refused, naming the keyword and where it is", () => {
  const cases: [unknown, string, string][] = [
    [{ type: "object", properties: { a: { type: "string", pattern: "^x" } } }, "pattern", "/properties/a/pattern"],
    [{ not: { type: "null" } }, "not", "/not"],
    [{ type: "integer", multipleOf: 5 }, "multipleOf", "/multipleOf"],
    [{ type: "array", uniqueItems: true }, "uniqueItems", "/uniqueItems"],
    [{ type: "string", format: "email" }, "format", "/format"],
    [{ type: "number", exclusiveMinimum: 0 }, "exclusiveMinimum", "/exclusiveMinimum"],
    [{ type: "number", minimum: -1 }, "minimum", "/minimum"],
    [{ type: "number", minimum: 0.5 }, "minimum", "/minimum"],
    [{ $ref: "https://example.com/s.json" }, "$ref", "/$ref"],
    [{ $ref: "#/$defs/missing" }, "$ref", "/$ref"],
    [{ type: "object", properties: { a: {} }, required: ["b"] }, "required", "/required"],
    [{ type: "object", properties: { a: {} }, minProperties: 2 }, "minProperties", "/minProperties"],
    [{ type: "integer", minimum: 5, maximum: 4 }, "minimum", "/minimum"],
    [{ type: "strin" }, "type", "/type"],
    [{ type: "object", properties: { a: { if: {}, then: {} } } }, "if", "/properties/a/if"],
  ];
  for (const [schema, keyword, at] of cases) {
    test(`${keyword} at ${at}`, () => {
      const err = refusal(schema);
      assert.equal(err.keyword, keyword);
      assert.equal(err.at, at);
      assert.ok(err.message.includes(keyword), err.message);
    });
  }
});
