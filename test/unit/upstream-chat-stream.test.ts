import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  decodeCompletionBody,
  UpstreamStreamDecoder,
  type UpstreamEvent,
} from "../../src/engines/upstream/chat-stream.js";
import { repoRoot } from "../helpers/paths.js";
import { rng } from "../helpers/rng.js";

const DIR = join(repoRoot, "test", "fixtures", "transcripts");
const readText = (name: string) => readFileSync(join(DIR, name), "utf8");
const readBytes = (name: string) => new Uint8Array(readFileSync(join(DIR, name)));
const enc = new TextEncoder();

const T = (text: string): UpstreamEvent => ({ type: "text", text });
const F = (reason: string): UpstreamEvent => ({ type: "finish", reason });
const U = (promptTokens: number, completionTokens: number): UpstreamEvent => ({
  type: "usage",
  promptTokens,
  completionTokens,
});
const E = (message: string, status: number | null): UpstreamEvent => ({ type: "error", message, status });
const D: UpstreamEvent = { type: "done" };

interface Decoded {
  events: UpstreamEvent[];
  ignored: number;
}

/** Feeds every chunk, then ends the body. */
function decode(chunks: (Uint8Array | string)[]): Decoded {
  const d = new UpstreamStreamDecoder();
  const events = chunks.flatMap((c) => d.push(c));
  events.push(...d.end());
  return { events, ignored: d.ignored };
}

const decodeString = (body: string) => decode([body]);

/** `bytes` cut at random places into pieces of 1 to `max` bytes. */
function randomChunks(bytes: Uint8Array, seed: number, max: number): Uint8Array[] {
  const next = rng(seed);
  const out: Uint8Array[] = [];
  for (let i = 0; i < bytes.length;) {
    const n = 1 + Math.floor(next() * max);
    out.push(bytes.subarray(i, i + n));
    i += n;
  }
  return out;
}

const byteByByte = (bytes: Uint8Array) => Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));

/** True when some piece ends inside a multi-byte UTF-8 character (the next piece starts with a continuation byte). */
const splitsACharacter = (pieces: Uint8Array[]) => pieces.slice(1).some((p) => (p[0] & 0xc0) === 0x80);

const text = (events: UpstreamEvent[]) => events.map((e) => (e.type === "text" ? e.text : "")).join("");

const TRANSCRIPTS: Record<string, UpstreamEvent[]> = {
  "vllm-include-usage.sse": [T("H"), T("éllo"), T(" —"), T(" 世界"), T(" 🙂\n"), T("Ça va?"), F("stop"), U(21, 9), D],
  "vllm-no-usage.sse": [T("Un café"), T(", s'il vous"), T(" plaît"), F("length"), D],
  "vllm-error.sse": [T("Partiel — ça"), E("Engine loop has died", 500), D],
  "llamacpp.sse": [T("héllo"), T(" — 世"), T("界 🙂"), F("stop"), U(14, 6), D],
  "llamacpp-include-usage.sse": [T("Grüß"), T(" Gott, 世界"), F("length"), U(11, 4), D],
  "llamacpp-error-line.sse": [
    T("¿Qué tal, 世界?"),
    E("Input prompt is too big compared to KV size. Please try increasing KV size.", 500),
    D,
  ],
  "llamacpp-error-data.sse": [
    T("Bonjour, ça va 🙂"),
    E("the request exceeds the available context size, try increasing it", 400),
  ],
  "sglang.sse": [T("Привет"), T(", мир! 🙂"), F("stop"), U(33, 7), D],
  "lucena.sse": [T("héllo"), T(" — "), T("世界 🙂"), U(42, 5), F("stop"), D],
  "lucena-error.sse": [T("Déjà"), E("Inference failed due to an internal error.", 500), D],
};

describe("recorded upstream transcripts", () => {
  for (const [name, expected] of Object.entries(TRANSCRIPTS)) {
    describe(name, () => {
      const body = readText(name);
      const bytes = readBytes(name);

      test("in one push: every event, in order, nothing ignored", () => {
        assert.deepEqual(decode([bytes]), { events: expected, ignored: 0 });
        assert.deepEqual(decodeString(body), { events: expected, ignored: 0 });
      });

      test("byte by byte (splitting UTF-8 characters)", () => {
        const pieces = byteByByte(bytes);
        assert.ok(splitsACharacter(pieces));
        assert.deepEqual(decode(pieces), { events: expected, ignored: 0 });
      });

      test("in random-sized chunks, seeded", () => {
        for (let seed = 1; seed <= 40; seed++) {
          const pieces = randomChunks(bytes, seed, 1 + (seed % 7) * 9);
          assert.deepEqual(decode(pieces), { events: expected, ignored: 0 }, `seed ${seed}`);
        }
      });

      test("as string chunks cut at every UTF-16 boundary (surrogate pairs too)", () => {
        for (let i = 0; i <= body.length; i += 7) {
          assert.deepEqual(decode([body.slice(0, i), body.slice(i)]).events, expected, `cut at ${i}`);
        }
      });

      test("CRLF and bare CR line endings", () => {
        const crlf = enc.encode(body.replaceAll("\n", "\r\n"));
        assert.deepEqual(decode([crlf]), { events: expected, ignored: 0 });
        // Cut between \r and \n too: the pair must stay one line ending, not a line and a blank line.
        assert.deepEqual(decode(byteByByte(crlf)), { events: expected, ignored: 0 });
        assert.deepEqual(decodeString(body.replaceAll("\n", "\r")), { events: expected, ignored: 0 });
      });

      test("without the trailing blank line, end() still delivers the last event", () => {
        assert.deepEqual(decodeString(body.replace(/\n+$/, "")), { events: expected, ignored: 0 });
        assert.deepEqual(decodeString(body.replace(/\n+$/, "\n")), { events: expected, ignored: 0 });
        assert.deepEqual(decodeString(body.replace(/\n+$/, "").replaceAll("\n", "\r\n")), {
          events: expected,
          ignored: 0,
        });
      });

      test("a leading BOM is dropped, as bytes or as a string", () => {
        assert.deepEqual(decode([new Uint8Array([0xef, 0xbb]), new Uint8Array([0xbf]), bytes]), {
          events: expected,
          ignored: 0,
        });
        assert.deepEqual(decodeString(`\uFEFF${body}`), { events: expected, ignored: 0 });
      });
    });
  }

  test("the transcripts' totals", () => {
    const vllm = decodeString(readText("vllm-include-usage.sse")).events;
    assert.equal(text(vllm), "Héllo — 世界 🙂\nÇa va?");
    const lucena = decodeString(readText("lucena.sse")).events;
    assert.equal(text(lucena), "héllo — 世界 🙂");
    assert.deepEqual(
      lucena.filter((e) => e.type !== "text"),
      [U(42, 5), F("stop"), D],
    );
    const noUsage = decodeString(readText("vllm-no-usage.sse")).events;
    assert.equal(text(noUsage), "Un café, s'il vous plaît");
    assert.equal(noUsage.filter((e) => e.type === "usage").length, 0);
  });

  test("events come out as soon as their event is complete, not at end()", () => {
    const d = new UpstreamStreamDecoder();
    const body = readText("sglang.sse");
    const cut = body.indexOf("data: [DONE]");
    assert.deepEqual(d.push(body.slice(0, cut)), [T("Привет"), T(", мир! 🙂"), F("stop"), U(33, 7)]);
    assert.deepEqual(d.push("data: [DO"), []);
    assert.deepEqual(d.push("NE]\n\n"), [D]);
    assert.deepEqual(d.end(), []);
  });
});

const chunk = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  `data: ${JSON.stringify({ object: "chat.completion.chunk", choices: [{ index: 0, finish_reason: null, ...choice }], ...extra })}\n\n`;

describe("payload rules", () => {
  test("non-JSON, non-object and unknown payloads and invalid lines are counted and skipped", () => {
    const body = [
      ": ping\n\n",
      "data: not json\n\n",
      "data: 42\n\n",
      'data: "text"\n\n',
      "data: null\n\n",
      "data: [1,2]\n\n",
      'data: {"foo":1}\n\n',
      'data: {"choices":null,"usage":{"prompt_tokens":"3","completion_tokens":1}}\n\n',
      'data: {"choices":[{"index":0,"delta":{"content":"tr',
      "uncated\n\n",
      "garbage line without a field\n\n",
      "retry: soon\n\n",
      "id: 7\nevent: message\n\n", // no data: no event at all
      chunk({ delta: { content: "ok" } }),
      ": keepalive\n\n",
      "data: [DONE]\n\n",
    ].join("");
    assert.deepEqual(decodeString(body), { events: [T("ok"), D], ignored: 10 });
  });

  test("a JSON payload spread over several data lines is joined", () => {
    const body =
      'data: {"choices":[{"index":0,\ndata:  "delta":{"content":"a\\nb"},\ndata: "finish_reason":"stop"}]}\n\n';
    assert.deepEqual(decodeString(body), { events: [T("a\nb"), F("stop")], ignored: 0 });
  });

  test("[DONE] with surrounding whitespace", () => {
    assert.deepEqual(decodeString("data:[DONE]\n\ndata:   [DONE]  \n\n").events, [D, D]);
  });

  test("within one chunk: text, then finish, then usage", () => {
    const body = chunk(
      { delta: { content: "end" }, finish_reason: "stop" },
      { usage: { completion_tokens: 3, prompt_tokens: 8, total_tokens: 11 } },
    );
    assert.deepEqual(decodeString(body).events, [T("end"), F("stop"), U(8, 3)]);
  });

  test("role-only, empty-content and reasoning chunks give no text and are not ignored; tool calls are their own", () => {
    const body = [
      chunk({ delta: { role: "assistant" } }),
      chunk({ delta: { role: "assistant", content: "" } }),
      chunk({ delta: { content: null } }),
      chunk({ delta: { reasoning_content: "thinking…" } }),
      chunk({ delta: { tool_calls: [{ index: 0, function: { arguments: "{}" } }] } }),
      chunk({ delta: {}, finish_reason: "tool_calls" }),
    ].join("");
    assert.deepEqual(decodeString(body), {
      events: [{ type: "tool_call", index: 0, arguments: "{}" }, F("tool_calls")],
      ignored: 0,
    });
  });

  test("finish reasons pass through as sent", () => {
    const body = ["stop", "length", "content_filter", "abort"]
      .map((r) => chunk({ delta: {}, finish_reason: r }))
      .join("");
    assert.deepEqual(decodeString(body).events, [F("stop"), F("length"), F("content_filter"), F("abort")]);
  });

  test("only choice index 0, wherever it sits in the array", () => {
    const body = [
      `data: ${JSON.stringify({ choices: [{ index: 1, delta: { content: "other" }, finish_reason: "stop" }] })}\n\n`,
      `data: ${JSON.stringify({
        choices: [
          { index: 1, delta: { content: "b" } },
          { index: 0, delta: { content: "a" } },
        ],
      })}\n\n`,
      `data: ${JSON.stringify({ choices: [{ delta: { content: "c" } }, { delta: { content: "d" } }] })}\n\n`,
    ].join("");
    assert.deepEqual(decodeString(body), { events: [T("a"), T("c")], ignored: 0 });
  });

  test("usage every time it is seen (continuous usage, llama.cpp repeats); null usage gives nothing", () => {
    const body = [
      chunk({ delta: { content: "x" } }, { usage: null }),
      chunk({ delta: { content: "y" } }, { usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } }),
      chunk(
        { delta: {}, finish_reason: "stop" },
        { usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } },
      ),
      `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } })}\n\n`,
    ].join("");
    const { events } = decodeString(body);
    assert.deepEqual(events, [T("x"), T("y"), U(5, 2), F("stop"), U(5, 3), U(5, 3)]);
    assert.deepEqual(events.filter((e) => e.type === "usage").at(-1), U(5, 3));
  });

  test("a usage with missing or non-numeric counts gives nothing", () => {
    const body = [
      chunk({ delta: { content: "z" } }, { usage: { prompt_tokens: 4 } }),
      `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 4, completion_tokens: "2" } })}\n\n`,
    ].join("");
    assert.deepEqual(decodeString(body), { events: [T("z")], ignored: 0 });
  });

  test("a stream cut mid-event ends without a throw; the half line is ignored", () => {
    const body = readText("vllm-no-usage.sse");
    const cut = body.indexOf("plaît") + 2;
    assert.deepEqual(decodeString(body.slice(0, cut)), { events: [T("Un café"), T(", s'il vous")], ignored: 1 });
  });
});

describe("errors", () => {
  const cases: [string, string, UpstreamEvent][] = [
    [
      "OpenAI shape with a numeric code",
      '{"error":{"message":"boom","type":"server_error","code":500}}',
      E("boom", 500),
    ],
    [
      "Lucena One's shutdown error",
      '{"error":{"message":"The server is shutting down.","type":"server_error","code":503}}',
      E("The server is shutting down.", 503),
    ],
    [
      "a string code",
      '{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}',
      E("slow down", null),
    ],
    ["no code", '{"error":{"message":"m","type":"server_error"}}', E("m", null)],
    ["a code outside 400–599", '{"error":{"message":"m","code":200}}', E("m", null)],
    ["a non-integer code", '{"error":{"message":"m","code":404.5}}', E("m", null)],
    ["a string error", '{"error":"Missing API Key"}', E("Missing API Key", null)],
    [
      "vLLM's flat ErrorResponse",
      '{"object":"error","message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400}',
      E("max_tokens is too large", 400),
    ],
    [
      "vLLM's nested error",
      '{"error":{"object":"error","message":"Engine loop has died","type":"InternalServerError","param":null,"code":500}}',
      E("Engine loop has died", 500),
    ],
    ["no message: the type stands in", '{"error":{"type":"server_error","code":502}}', E("server_error", 502)],
    ["nothing usable", '{"error":{"code":"x"}}', E("Upstream error", null)],
    [
      "an error next to choices wins",
      '{"error":{"message":"m","code":429},"choices":[{"index":0,"delta":{"content":"no"}}]}',
      E("m", 429),
    ],
  ];
  for (const [name, payload, expected] of cases) {
    test(`data payload: ${name}`, () => {
      assert.deepEqual(decodeString(`data: ${payload}\n\ndata: [DONE]\n\n`), { events: [expected, D], ignored: 0 });
    });
  }

  test("an error: null field is no error", () => {
    assert.deepEqual(decodeString(chunk({ delta: { content: "fine" } }, { error: null })).events, [T("fine")]);
  });

  test("llama.cpp's `error:` line, JSON or plain", () => {
    const body = 'error: {"code":503,"message":"Loading model","type":"unavailable_error"}\n\nerror: it broke\n\n';
    assert.deepEqual(decodeString(body), { events: [E("Loading model", 503), E("it broke", null)], ignored: 0 });
  });

  test("an `event: error` makes the data an error, JSON or plain text", () => {
    const body = [
      'event: error\ndata: {"message":"overloaded","code":529}\n\n',
      'event: error\ndata: {"error":{"message":"bad","code":400}}\n\n',
      "event: error\ndata: upstream timed out\n\n",
      "event:error\ndata:\n\n",
    ].join("");
    assert.deepEqual(decodeString(body), {
      events: [E("overloaded", 529), E("bad", 400), E("upstream timed out", null), E("Upstream error", null)],
      ignored: 0,
    });
  });

  test("other event names decode as usual", () => {
    const body = `event: message\n${chunk({ delta: { content: "a" } })}event: delta\n${chunk({ delta: { content: "b" } })}`;
    assert.deepEqual(decodeString(body), { events: [T("a"), T("b")], ignored: 0 });
  });

  test("an event larger than the buffer limit gives one error and ends decoding", () => {
    const d = new UpstreamStreamDecoder({ maxBufferChars: 200 });
    const first = d.push(chunk({ delta: { content: "ok" } }));
    // A line that never ends (or an event that never closes) is what grows the buffer.
    const big = [
      d.push(`data: {"choices":[{"index":0,"delta":{"content":"${"x".repeat(100)}`),
      d.push("x".repeat(200)),
    ];
    const after = d.push(chunk({ delta: { content: "late" } }));
    assert.deepEqual(
      [first, ...big, after, d.end()],
      [[T("ok")], [], [E("Upstream stream event exceeds 200 characters", null)], [], []],
    );
  });
});

describe("decodeCompletionBody", () => {
  test("vLLM chat.completion", () => {
    const body = JSON.parse(readText("vllm-completion.json")) as unknown;
    assert.deepEqual(decodeCompletionBody(body), [T("héllo — 世界 🙂"), F("stop"), U(19, 8)]);
  });

  test("llama.cpp chat.completion (reasoning_content left out)", () => {
    const body = JSON.parse(readText("llamacpp-completion.json")) as unknown;
    assert.deepEqual(decodeCompletionBody(body), [T("Hola, señor — 世界"), F("length"), U(9, 16)]);
  });

  test("a tool-call answer has no text: its calls are events of their own", () => {
    const body = {
      object: "chat.completion",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function" }] },
          finish_reason: "tool_calls",
        },
      ],
      usage: { prompt_tokens: 30, completion_tokens: 12, total_tokens: 42 },
    };
    assert.deepEqual(decodeCompletionBody(body), [{ type: "tool_call", index: 0 }, F("tool_calls"), U(30, 12)]);
  });

  test("error bodies", () => {
    assert.deepEqual(
      decodeCompletionBody({ error: { message: "Model not found", type: "invalid_request_error", code: 404 } }),
      [E("Model not found", 404)],
    );
    assert.deepEqual(
      decodeCompletionBody({ object: "error", message: "bad", type: "BadRequestError", param: null, code: 400 }),
      [E("bad", 400)],
    );
    assert.deepEqual(decodeCompletionBody({ error: "Missing API Key" }), [E("Missing API Key", null)]);
  });

  test("anything else gives nothing and throws nothing", () => {
    for (const body of [
      null,
      undefined,
      42,
      "text",
      [],
      [{ choices: [] }],
      {},
      { choices: "x" },
      { choices: [null, 3] },
    ]) {
      assert.deepEqual(decodeCompletionBody(body), [], JSON.stringify(body));
    }
  });
});

describe("tool calls in an upstream's stream", () => {
  /** vLLM's shape (the OpenAI one): the first delta of a call names it, the next ones carry argument pieces. */
  const chunk = (delta: unknown, finish: string | null = null) =>
    `data: ${JSON.stringify({ id: "x", object: "chat.completion.chunk", choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
  const stream =
    chunk({ role: "assistant", content: "" }) +
    chunk({
      tool_calls: [
        { index: 0, id: "chatcmpl-tool-1", type: "function", function: { name: "get_weather", arguments: "" } },
      ],
    }) +
    chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city": "Pa' } }] }) +
    chunk({ tool_calls: [{ index: 0, function: { arguments: 'ris, «Île»"}' } }] }) +
    chunk({
      tool_calls: [
        { index: 1, id: "chatcmpl-tool-2", type: "function", function: { name: "get_time", arguments: "{}" } },
      ],
    }) +
    chunk({}, "tool_calls") +
    "data: [DONE]\n\n";

  /** Each call's name and arguments, joined from its pieces. */
  function calls(events: UpstreamEvent[]): Record<number, { name: string; arguments: string }> {
    const out: Record<number, { name: string; arguments: string }> = {};
    for (const ev of events) {
      if (ev.type !== "tool_call") continue;
      const c = (out[ev.index] ??= { name: "", arguments: "" });
      c.name += ev.name ?? "";
      c.arguments += ev.arguments ?? "";
    }
    return out;
  }

  test("split at every byte, the pieces join into the same calls, then the finish", () => {
    const bytes = enc.encode(stream);
    const expected = {
      0: { name: "get_weather", arguments: '{"city": "Paris, «Île»"}' },
      1: { name: "get_time", arguments: "{}" },
    };
    for (let at = 0; at <= bytes.length; at++) {
      const d = new UpstreamStreamDecoder();
      const events = [...d.push(bytes.slice(0, at)), ...d.push(bytes.slice(at)), ...d.end()];
      assert.deepEqual(calls(events), expected, `split at byte ${at}`);
      assert.deepEqual(
        events.filter((e) => e.type === "finish"),
        [F("tool_calls")],
      );
    }
  });

  test("a whole message's tool_calls (a JSON answer)", () => {
    const events = decodeCompletionBody({
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: null,
            tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: '{"a":1}' } }],
          },
          finish_reason: "tool_calls",
        },
      ],
    });
    assert.deepEqual(calls(events), { 0: { name: "f", arguments: '{"a":1}' } });
  });
});
