import { digitRange, type IntBounds } from "./int-range.js";

/**
 * JSON Schema to a llama.cpp grammar (GBNF), for `response_format` and tool arguments on the embedded engine.
 *
 * The rules follow llama.cpp's own converter (common/json-schema-to-grammar.cpp, what llama-server does with a
 * `json_schema`), with one difference of principle: every keyword that constrains a value is either enforced by
 * the grammar or refused, never ignored, so that an answer always validates against the schema it was asked
 * for. node-llama-cpp's converter (LlamaJsonSchemaGrammar) is not used for that reason: it skips keywords it
 * does not know (`minimum`, `pattern`) and lets integers run past 2^53 or into exponents.
 *
 * What is enforced:
 * - `type` (one or a list), `enum`, `const`, `anyOf` and `oneOf` (as alternatives: the output matches one of
 *   them; `oneOf`'s "exactly one" holds for disjoint alternatives, which is what clients send), `allOf` of
 *   object schemas (merged), `$ref` into the document (`#/$defs/…`, `#/definitions/…`, any JSON pointer;
 *   recursion allowed), `nullable` (OpenAPI 3.0).
 * - Objects: `properties`, in their order, every one written (a property outside `required` is allowed to
 *   be absent, so writing it is valid too; that keeps the grammar small and the output complete); no other
 *   property is ever written, so `additionalProperties` of any value holds. `minProperties` up to the number
 *   of properties written and `maxProperties` from it on.
 * - Arrays: `items`, `prefixItems`, `minItems`, `maxItems`.
 * - Strings: `minLength`, `maxLength`, `format` `date`, `time`, `date-time` and `uuid`.
 * - Integers: `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, exactly (digit ranges), and never
 *   more than 15 digits, inside JavaScript's safe integers. Numbers: no exponent, at most 15 digits before the
 *   point and 15 after; bounds when the lower one is a whole number ≥ 0 and the upper one (if any) a whole number.
 *
 * What is refused, with a 400 naming the keyword and where it is: `pattern`, `not`, `if`/`then`/`else`,
 * `multipleOf`, `uniqueItems`, `contains`, `patternProperties`, `dependentRequired`, other `format`s, bounds
 * that cannot be expressed, and any keyword this list does not name. Annotations (`title`, `description`,
 * `default`, `examples`, `$schema`, `$id`, `$comment`, `deprecated`, `readOnly`, `writeOnly`) change nothing.
 */

type Schema = Record<string, unknown>;

/** At most this many digits in an integer or in a number's whole part: 999,999,999,999,999 < 2^53. */
const MAX_DIGITS = 15;
const MAX_INT = 10 ** MAX_DIGITS - 1;

const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "deprecated",
  "readOnly",
  "writeOnly",
  "$defs",
  "definitions",
]);

/** Keywords read, by the type they apply to ("any": every schema). */
const KNOWN = new Set([
  "type",
  "enum",
  "const",
  "anyOf",
  "oneOf",
  "allOf",
  "$ref",
  "nullable",
  "properties",
  "required",
  "additionalProperties",
  "minProperties",
  "maxProperties",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "minLength",
  "maxLength",
  "format",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
]);

const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"] as const;
type JsonType = (typeof TYPES)[number];

/** The building blocks every grammar may use: written once, when first used. */
const PRIMITIVES: Record<string, string> = {
  space: `| " " | "\\n" [ \\t]{0,20}`,
  char: `[^"\\\\\\x7F\\x00-\\x1F] | [\\\\] (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})`,
  string: `"\\"" char* "\\"" space`,
  boolean: `("true" | "false") space`,
  null: `"null" space`,
  integer: `"-"? ("0" | [1-9] [0-9]{0,${MAX_DIGITS - 1}}) space`,
  number: `"-"? ("0" | [1-9] [0-9]{0,${MAX_DIGITS - 1}}) ("." [0-9]{1,${MAX_DIGITS}})? space`,
  value: `object | array | string | number | boolean | null`,
  object: `"{" space (string ":" space value ("," space string ":" space value)*)? "}" space`,
  array: `"[" space (value ("," space value)*)? "]" space`,
  // Days the month has (February to the 28th, valid in every year).
  "date-digits":
    `[0-9]{4} "-" (("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01]) | ` +
    `("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30") | "02" "-" ("0" [1-9] | "1" [0-9] | "2" [0-8]))`,
  "time-digits": `([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})? ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])`,
};
const PRIMITIVE_USES: Record<string, string[]> = {
  string: ["char", "space"],
  boolean: ["space"],
  null: ["space"],
  integer: ["space"],
  number: ["space"],
  value: ["object", "array", "string", "number", "boolean", "null"],
  object: ["space", "string", "value"],
  array: ["space", "value"],
};

const FORMATS: Record<string, { uses: string[]; body: string }> = {
  date: { uses: ["date-digits"], body: `"\\"" date-digits "\\""` },
  time: { uses: ["time-digits"], body: `"\\"" time-digits "\\""` },
  "date-time": { uses: ["date-digits", "time-digits"], body: `"\\"" date-digits "T" time-digits "\\""` },
  uuid: {
    uses: [],
    body: `"\\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\\""`,
  },
};

/** A string as a GBNF literal. */
export function literal(text: string): string {
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return `${out}"`;
}

/** Why a schema cannot be followed: a 400 naming the keyword and where it is (a JSON pointer into the schema). */
export class SchemaRefusal extends Error {
  constructor(
    readonly keyword: string,
    readonly at: string,
    readonly why: string,
  ) {
    super(`${why} (at ${at || "/"})`);
  }
}

/**
 * The grammar's rules, by name. Each schema node becomes an expression; `$ref` targets, which may recur, get a
 * rule of their own.
 */
class Rules {
  /** $ref pointer → rule name (set before the body is built, so recursion finds it). */
  private readonly refs = new Map<string, string>();

  constructor(
    private readonly root: unknown,
    /** The grammar's rules, shared by every schema of one grammar (GrammarBuilder). */
    private readonly rules = new Map<string, string>(),
  ) {}

  use(name: string): string {
    if (!this.rules.has(name)) {
      const body = PRIMITIVES[name];
      if (body === undefined) throw new Error(`no primitive rule ${name}`);
      this.rules.set(name, body);
      for (const dep of PRIMITIVE_USES[name] ?? []) this.use(dep);
    }
    return name;
  }

  add(prefix: string, body: string): string {
    let name = prefix.replace(/[^a-zA-Z0-9-]+/g, "-").replace(/^-+|-+$/g, "") || "rule";
    if (!/^[a-zA-Z]/.test(name)) name = `r-${name}`;
    let unique = name;
    for (let i = 1; this.rules.has(unique) || Object.hasOwn(PRIMITIVES, unique); i++) unique = `${name}-${i}`;
    this.rules.set(unique, body);
    return unique;
  }

  format(rootExpr: string): string {
    const lines = [`root ::= ${rootExpr}`];
    for (const [name, body] of this.rules) lines.push(`${name} ::= ${body}`);
    return `${lines.join("\n")}\n`;
  }

  /** The rule for a `$ref`: the schema it points to, resolved in the document. */
  ref(pointer: string, at: string): string {
    const known = this.refs.get(pointer);
    if (known) return known;
    const target = this.resolve(pointer, at);
    const name = this.add(`ref-${pointer.split("/").at(-1) ?? "def"}`, "");
    this.refs.set(pointer, name);
    this.rules.set(name, this.visit(target, pointer.slice(1)));
    return name;
  }

  private resolve(pointer: string, at: string): unknown {
    if (!pointer.startsWith("#")) {
      throw new SchemaRefusal("$ref", at, `'$ref' must point inside the schema ('#/…'), not to '${pointer}'`);
    }
    let node: unknown = this.root;
    for (const raw of pointer.slice(1).split("/").slice(1)) {
      const key = decodeURIComponent(raw).replaceAll("~1", "/").replaceAll("~0", "~");
      node = isObject(node) && Object.hasOwn(node, key) ? node[key] : undefined;
      if (node === undefined) throw new SchemaRefusal("$ref", at, `'$ref' '${pointer}' points to nothing`);
    }
    return node;
  }

  /** The expression for one schema node (each ends with `space`, as the values it stands for do). */
  visit(schema: unknown, at: string): string {
    if (schema === true || (isObject(schema) && Object.keys(schema).every((k) => ANNOTATIONS.has(k)))) {
      return this.use("value");
    }
    if (!isObject(schema)) throw new SchemaRefusal("", at, "a schema must be an object or true");
    for (const key of Object.keys(schema)) {
      if (!KNOWN.has(key) && !ANNOTATIONS.has(key)) {
        throw new SchemaRefusal(key, `${at}/${key}`, `the JSON Schema keyword '${key}' is not supported`);
      }
    }
    const alternatives = (key: "anyOf" | "oneOf"): string => {
      const list = schema[key];
      if (!Array.isArray(list) || list.length === 0) {
        throw new SchemaRefusal(key, `${at}/${key}`, `'${key}' must be a non-empty list of schemas`);
      }
      return `(${list.map((s, i) => this.visit(s, `${at}/${key}/${i}`)).join(" | ")})`;
    };
    let expr: string;
    if (typeof schema.$ref === "string") {
      expr = this.ref(schema.$ref, `${at}/$ref`);
      // Sibling constraints of a $ref would have to hold too: refuse rather than ignore them.
      const siblings = Object.keys(schema).filter((k) => k !== "$ref" && !ANNOTATIONS.has(k));
      if (siblings.length > 0) {
        throw new SchemaRefusal(
          siblings[0]!,
          `${at}/${siblings[0]!}`,
          `'${siblings[0]!}' beside '$ref' is not supported`,
        );
      }
    } else if (schema.anyOf !== undefined) expr = alternatives("anyOf");
    else if (schema.oneOf !== undefined) expr = alternatives("oneOf");
    else if (schema.allOf !== undefined) expr = this.visit(this.mergeAllOf(schema, at), at);
    else if (Object.hasOwn(schema, "const")) expr = this.literals([schema.const], schema, at);
    else if (schema.enum !== undefined) {
      if (!Array.isArray(schema.enum) || schema.enum.length === 0) {
        throw new SchemaRefusal("enum", `${at}/enum`, "'enum' must be a non-empty list");
      }
      expr = this.literals(schema.enum, schema, at);
    } else expr = this.typed(schema, at);
    if (schema.nullable === true) expr = `(${expr} | ${this.use("null")})`;
    return expr;
  }

  /** enum/const: the values themselves, as compact JSON; those the schema's `type` excludes are left out. */
  private literals(values: unknown[], schema: Schema, at: string): string {
    const types = typesOf(schema, at);
    const kept = values.filter((v) => types === null || types.some((t) => hasType(v, t)));
    if (kept.length === 0)
      throw new SchemaRefusal("enum", `${at}/enum`, "no value of 'enum' or 'const' has the schema's type");
    this.use("space");
    return `(${kept.map((v) => literal(JSON.stringify(v))).join(" | ")}) space`;
  }

  private typed(schema: Schema, at: string): string {
    const types = typesOf(schema, at) ?? inferTypes(schema);
    if (types === null) return this.use("value");
    const exprs = types.map((t) => this.ofType(t, schema, at));
    return exprs.length === 1 ? exprs[0]! : `(${exprs.join(" | ")})`;
  }

  private ofType(type: JsonType, schema: Schema, at: string): string {
    switch (type) {
      case "object":
        return this.object(schema, at);
      case "array":
        return this.array(schema, at);
      case "string":
        return this.string(schema, at);
      case "integer":
        return this.integer(schema, at);
      case "number":
        return this.number(schema, at);
      case "boolean":
      case "null":
        return this.use(type);
    }
  }

  private object(schema: Schema, at: string): string {
    // No properties listed: any object, unless no property is allowed at all.
    if (schema.properties === undefined && schema.required === undefined && schema.additionalProperties !== false) {
      for (const key of ["minProperties", "maxProperties"]) {
        if (schema[key] !== undefined) throw new SchemaRefusal(key, `${at}/${key}`, `'${key}' needs 'properties'`);
      }
      return this.use("object");
    }
    const props = schema.properties ?? {};
    if (!isObject(props)) throw new SchemaRefusal("properties", `${at}/properties`, "'properties' must be an object");
    const required = schema.required ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === "string")) {
      throw new SchemaRefusal("required", `${at}/required`, "'required' must be a list of property names");
    }
    for (const name of required) {
      if (!Object.hasOwn(props, name)) {
        throw new SchemaRefusal(
          "required",
          `${at}/required`,
          `'required' names '${name}', which is not in 'properties' (only listed properties are written)`,
        );
      }
    }
    const names = Object.keys(props);
    const count = names.length;
    checkCount(schema, "minProperties", at, (n) => n <= count, `at most ${count}, the properties listed`);
    checkCount(schema, "maxProperties", at, (n) => n >= count, `at least ${count}, the properties listed`);
    this.use("space");
    if (count === 0) return `"{" space "}" space`;
    // The keys are literals: the grammar's `string` rule is not needed for them.
    const kvs = names.map(
      (name) =>
        `${literal(JSON.stringify(name))} space ":" space ${this.visit(props[name], `${at}/properties/${escapePointer(name)}`)}`,
    );
    return `"{" space ${kvs.join(` "," space `)} "}" space`;
  }

  private array(schema: Schema, at: string): string {
    const min = count(schema, "minItems", at) ?? 0;
    const max = count(schema, "maxItems", at);
    if (max !== null && max < min)
      throw new SchemaRefusal("maxItems", `${at}/maxItems`, "'maxItems' is below 'minItems'");
    this.use("space");
    const prefix = schema.prefixItems;
    if (prefix !== undefined) {
      if (!Array.isArray(prefix))
        throw new SchemaRefusal("prefixItems", `${at}/prefixItems`, "'prefixItems' must be a list");
      if (schema.items !== undefined && schema.items !== false) {
        throw new SchemaRefusal("items", `${at}/items`, "'items' beside 'prefixItems' is supported only as false");
      }
      // Exactly the prefix, which then must fit the bounds.
      if (prefix.length < min || (max !== null && prefix.length > max)) {
        throw new SchemaRefusal("prefixItems", `${at}/prefixItems`, "'prefixItems' does not fit 'minItems'/'maxItems'");
      }
      const items = prefix.map((s, i) => this.visit(s, `${at}/prefixItems/${i}`));
      return items.length === 0 ? `"[" space "]" space` : `"[" space ${items.join(` "," space `)} "]" space`;
    }
    if (schema.items === false) {
      if (min > 0) throw new SchemaRefusal("items", `${at}/items`, "'items': false leaves no room for 'minItems'");
      return `"[" space "]" space`;
    }
    if (max === 0) return `"[" space "]" space`;
    // The item is a rule of its own: llama.cpp copies a counted repetition's body once per count, and refuses a
    // grammar whose copies grow too large.
    const expr = this.visit(schema.items ?? true, `${at}/items`);
    const item = /^[a-zA-Z0-9-]+$/.test(expr) ? expr : this.add(`${at.split("/").at(-1) || "root"}-item`, expr);
    const next = `("," space ${item})`;
    const rest = max === null ? `${next}*` : `${next}{${Math.max(0, min - 1)},${max - 1}}`;
    const some = `${item} ${min > 1 && max === null ? `${next}{${min - 1},}` : rest}`;
    return `"[" space ${min === 0 ? `(${some})?` : some} "]" space`;
  }

  private string(schema: Schema, at: string): string {
    const min = count(schema, "minLength", at) ?? 0;
    const max = count(schema, "maxLength", at);
    if (max !== null && max < min)
      throw new SchemaRefusal("maxLength", `${at}/maxLength`, "'maxLength' is below 'minLength'");
    this.use("space");
    if (schema.format !== undefined) {
      const name = typeof schema.format === "string" ? schema.format : JSON.stringify(schema.format);
      const format = Object.hasOwn(FORMATS, name) ? FORMATS[name] : undefined;
      if (format === undefined) {
        throw new SchemaRefusal(
          "format",
          `${at}/format`,
          `the string format '${name}' is not supported (supported: ${Object.keys(FORMATS).join(", ")})`,
        );
      }
      if (schema.minLength !== undefined || schema.maxLength !== undefined) {
        throw new SchemaRefusal("minLength", `${at}/minLength`, "lengths beside 'format' are not supported");
      }
      for (const dep of format.uses) this.use(dep);
      return `${format.body} space`;
    }
    if (min === 0 && max === null) return this.use("string");
    this.use("char");
    return `"\\"" char{${min},${max ?? ""}} "\\"" space`;
  }

  private integer(schema: Schema, at: string): string {
    let lo = -MAX_INT;
    let hi = MAX_INT;
    const bound = (key: string, f: (n: number) => void) => {
      const v = schema[key];
      if (v === undefined) return;
      if (typeof v !== "number" || !Number.isFinite(v))
        throw new SchemaRefusal(key, `${at}/${key}`, `'${key}' must be a number`);
      f(v);
    };
    bound("minimum", (v) => (lo = Math.max(lo, Math.ceil(v))));
    bound("exclusiveMinimum", (v) => (lo = Math.max(lo, Math.floor(v) + 1)));
    bound("maximum", (v) => (hi = Math.min(hi, Math.floor(v))));
    bound("exclusiveMaximum", (v) => (hi = Math.min(hi, Math.ceil(v) - 1)));
    if (lo > hi) throw new SchemaRefusal("minimum", `${at}/minimum`, "no integer lies within the bounds");
    if (lo === -MAX_INT && hi === MAX_INT) return this.use("integer");
    this.use("space");
    return `(${intRange({ lo, hi })}) space`;
  }

  private number(schema: Schema, at: string): string {
    const bounded = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"].filter(
      (k) => schema[k] !== undefined,
    );
    if (bounded.length === 0) return this.use("number");
    const min = schema.minimum;
    const max = schema.maximum;
    const refuse = (key: string) =>
      new SchemaRefusal(
        key,
        `${at}/${key}`,
        `'${key}' on a number is supported only as a whole 'minimum' ≥ 0 with an optional whole 'maximum'`,
      );
    for (const key of bounded) if (key !== "minimum" && key !== "maximum") throw refuse(key);
    if (typeof min !== "number" || !Number.isInteger(min) || min < 0 || min > MAX_INT) throw refuse("minimum");
    if (max !== undefined && (typeof max !== "number" || !Number.isInteger(max) || max < min || max > MAX_INT))
      throw refuse("maximum");
    this.use("space");
    const fraction = `("." [0-9]{1,${MAX_DIGITS}})?`;
    if (max === undefined) return `(${intRange({ lo: min, hi: MAX_INT })}) ${fraction} space`;
    const whole = `${literal(String(max))} ("." "0"{1,${MAX_DIGITS}})?`;
    if (max === min) return `${whole} space`;
    return `((${intRange({ lo: min, hi: max - 1 })}) ${fraction} | ${whole}) space`;
  }

  /** allOf of object schemas (or references to them): one object schema with every part's properties. */
  private mergeAllOf(schema: Schema, at: string): Schema {
    const parts = schema.allOf;
    if (!Array.isArray(parts) || parts.length === 0) {
      throw new SchemaRefusal("allOf", `${at}/allOf`, "'allOf' must be a non-empty list of schemas");
    }
    const merged: { type: "object"; properties: Schema; required: string[] } = {
      type: "object",
      properties: {},
      required: [],
    };
    const add = (part: unknown, where: string) => {
      const s = isObject(part) && typeof part.$ref === "string" ? this.resolve(part.$ref, where) : part;
      if (
        !isObject(s) ||
        Object.keys(s).some(
          (k) => !ANNOTATIONS.has(k) && !["type", "properties", "required", "additionalProperties"].includes(k),
        ) ||
        (s.type !== undefined && s.type !== "object")
      ) {
        throw new SchemaRefusal("allOf", where, "'allOf' is supported only for object schemas with properties");
      }
      Object.assign(merged.properties, s.properties ?? {});
      if (Array.isArray(s.required)) merged.required.push(...(s.required as string[]));
    };
    parts.forEach((p, i) => add(p, `${at}/allOf/${i}`));
    const { allOf: _parts, ...rest } = schema;
    if (Object.keys(rest).some((k) => !ANNOTATIONS.has(k) && k !== "type")) {
      throw new SchemaRefusal("allOf", `${at}/allOf`, "'allOf' beside other keywords is not supported");
    }
    return merged;
  }
}

function isObject(v: unknown): v is Schema {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function escapePointer(key: string): string {
  return key.replaceAll("~", "~0").replaceAll("/", "~1");
}

function typesOf(schema: Schema, at: string): JsonType[] | null {
  const t = schema.type;
  if (t === undefined) return null;
  const list = Array.isArray(t) ? t : [t];
  for (const x of list) {
    if (!TYPES.includes(x as JsonType)) throw new SchemaRefusal("type", `${at}/type`, `unknown type '${String(x)}'`);
  }
  if (list.length === 0) throw new SchemaRefusal("type", `${at}/type`, "'type' is an empty list");
  return list as JsonType[];
}

/** A schema without `type`: the type its keywords imply, if they imply one. */
function inferTypes(schema: Schema): JsonType[] | null {
  if (schema.properties !== undefined || schema.required !== undefined) return ["object"];
  if (schema.items !== undefined || schema.prefixItems !== undefined) return ["array"];
  if (schema.minLength !== undefined || schema.maxLength !== undefined || schema.format !== undefined)
    return ["string"];
  if (["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"].some((k) => schema[k] !== undefined))
    return ["number"];
  return null;
}

function hasType(v: unknown, t: JsonType): boolean {
  switch (t) {
    case "null":
      return v === null;
    case "array":
      return Array.isArray(v);
    case "object":
      return isObject(v);
    case "integer":
      return Number.isInteger(v);
    default:
      return typeof v === t;
  }
}

function count(schema: Schema, key: string, at: string): number | null {
  const v = schema[key];
  if (v === undefined) return null;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new SchemaRefusal(key, `${at}/${key}`, `'${key}' must be a whole number ≥ 0`);
  }
  return v;
}

function checkCount(schema: Schema, key: string, at: string, ok: (n: number) => boolean, what: string): void {
  const n = count(schema, key, at);
  if (n !== null && !ok(n)) throw new SchemaRefusal(key, `${at}/${key}`, `'${key}' is supported only as ${what}`);
}

/** A grammar expression for the integers lo…hi (written without leading zeros, "-0" never). */
export function intRange(b: IntBounds): string {
  const parts: string[] = [];
  if (b.lo < 0) {
    const negHi = -b.lo;
    const negLo = Math.max(1, -Math.min(b.hi, -1));
    parts.push(`"-" (${digitRange(negLo, negHi)})`);
  }
  if (b.hi >= 0) parts.push(digitRange(Math.max(0, b.lo), b.hi));
  return parts.join(" | ");
}

/**
 * One grammar holding several schemas' values (a tool call's arguments, one schema per tool) and rules of the
 * caller's own around them.
 */
export class GrammarBuilder {
  private readonly rules = new Map<string, string>();

  /** The expression for a value valid against `schema` (a document of its own: its `$ref`s resolve in it). */
  value(schema: unknown): string {
    return new Rules(schema, this.rules).visit(schema, "");
  }

  /** A rule of the caller's: its unique name. */
  rule(name: string, body: string): string {
    return new Rules({}, this.rules).add(name, body);
  }

  /** The whole grammar, `root` first. */
  format(root: string): string {
    return new Rules({}, this.rules).format(root);
  }
}

/** The grammar for values valid against `schema`: the whole document (its root is the schema's value). */
export function jsonSchemaGrammar(schema: unknown): string {
  const rules = new Rules(schema);
  const root = rules.visit(schema, "");
  return rules.format(root);
}

/** The grammar for any JSON object (response_format json_object). */
export function jsonObjectGrammar(): string {
  const rules = new Rules({});
  return rules.format(rules.use("object"));
}
