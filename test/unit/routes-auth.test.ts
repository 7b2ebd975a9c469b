import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DEMO_NOTICE } from "../../src/config/defaults.js";
import { AUTH, assertError, chat, FakeEngine, requestId, setup, TEST_KEY, USER_HELLO } from "../helpers/fake-engine.js";

const MISSING = { error: "Missing API Key" };
const INVALID = { error: { message: "Invalid API Key", type: "gateway_auth_error", code: 401 } };
const NOT_FOUND = { error: { message: "Not found.", type: "not_found", code: 404 } };

describe("auth", () => {
  const v1Routes = [
    ["GET", "/v1/models"],
    ["GET", "/v1/stats"],
    ["POST", "/v1/chat/completions"],
    ["POST", "/v1/tokens/count"],
    ["GET", "/v1/whatever"],
    ["POST", "/v1/whatever"],
    ["GET", "/v1"],
    ["GET", "/v1/models?x=1"],
    ["GET", "/v1/models/lucena-coder-latest"],
  ] as const;

  for (const [method, url] of v1Routes) {
    test(`${method} ${url} without Authorization → 401 {"error":"Missing API Key"} exactly`, async (t) => {
      const { app, engine } = setup(t);
      const res = await app.inject({
        method,
        url,
        ...(method === "POST" ? { payload: { model: "lucena-coder-latest", messages: USER_HELLO } } : {}),
      });
      assert.equal(res.statusCode, 401);
      requestId(res);
      assert.equal(res.body, JSON.stringify(MISSING));
      assert.equal(engine.calls.length, 0);
    });
  }

  // No credential at all (a blank header, the Bearer scheme without a token) is a missing key, as no header is;
  // a header that is present but is not `Bearer <token>` is an invalid key (docs/api.md, "Authentication"), even around a good key.
  const headerCases = [
    ...["", "   ", "Bearer", "Bearer ", "bearer \t "].map((h) => [h, MISSING] as const),
    ...[
      "Basic xxx",
      "Basic " + Buffer.from(`user:${TEST_KEY}`).toString("base64"),
      TEST_KEY,
      `Bearer ${TEST_KEY} extra`,
      `Bearer ${TEST_KEY},${TEST_KEY}x extra`,
      `Token ${TEST_KEY}`,
      `Bearer: ${TEST_KEY}`,
      `${TEST_KEY} Bearer`,
    ].map((h) => [h, INVALID] as const),
  ];
  for (const [header, expected] of headerCases) {
    test(`Authorization ${JSON.stringify(header.replaceAll(TEST_KEY, "<key>"))} → 401 ${expected === MISSING ? "Missing" : "Invalid"} API Key`, async (t) => {
      const { app, engine } = setup(t);
      for (const [method, url] of v1Routes) {
        const res = await app.inject({ method, url, headers: { authorization: header } });
        assert.equal(res.statusCode, 401, `${method} ${url}`);
        requestId(res);
        assert.equal(res.body, JSON.stringify(expected), `${method} ${url}`);
      }
      assert.equal(engine.calls.length, 0);
    });
  }

  for (const [name, key] of [
    ["an unknown sk-lucena- key", "sk-lucena-unknown000000000000000000"],
    ["the key plus a character", `${TEST_KEY}x`],
    ["the key less its last character", TEST_KEY.slice(0, -1)],
    ["a malformed key", "nonsense"],
  ] as const) {
    test(`${name} → 401 Invalid API Key on every /v1 route`, async (t) => {
      const { app, engine } = setup(t);
      for (const [method, url] of v1Routes) {
        const res = await app.inject({ method, url, headers: { authorization: `Bearer ${key}` } });
        assert.equal(res.statusCode, 401, `${method} ${url}`);
        requestId(res);
        assert.equal(res.body, JSON.stringify(INVALID), `${method} ${url}`);
      }
      assert.equal(engine.calls.length, 0);
    });
  }

  test("the Bearer scheme is case-insensitive and surrounding blanks are tolerated", async (t) => {
    const { app } = setup(t);
    for (const authorization of [`bearer ${TEST_KEY}`, `BEARER ${TEST_KEY}`, `Bearer   ${TEST_KEY}  `]) {
      const res = await app.inject({ method: "GET", url: "/v1/models", headers: { authorization } });
      assert.equal(res.statusCode, 200, authorization);
    }
  });

  test("a valid key on an unknown /v1 route → 404 not_found body", async (t) => {
    const { app } = setup(t);
    for (const [method, url] of [
      ["GET", "/v1/whatever"],
      ["POST", "/v1/whatever"],
      ["GET", "/v1"],
      ["GET", "/v1/chat/completions/x"],
    ] as const) {
      const res = await app.inject({ method, url, headers: AUTH });
      assert.equal(res.statusCode, 404, `${method} ${url}`);
      requestId(res);
      assert.equal(res.body, JSON.stringify(NOT_FOUND));
    }
  });

  // A path whose percent-decoding is a /v1 route must not be served without a key (it is either refused with
  // 401 like /v1 itself, or not found).
  for (const [method, url] of [
    ["GET", "/%761/models"],
    ["GET", "/v%31/models"],
    ["GET", "/%76%31/stats"],
    ["POST", "/%76%31/chat/completions"],
    ["POST", "/v%31/tokens/count"],
    ["GET", "/v1%2Fmodels"],
  ] as const) {
    test(`percent-encoded ${method} ${url} without a key is not served`, async (t) => {
      const { app, engine } = setup(t);
      const res = await app.inject({
        method,
        url,
        ...(method === "POST" ? { payload: { model: "lucena-coder-latest", messages: USER_HELLO } } : {}),
      });
      requestId(res);
      assert.ok(
        res.statusCode === 401 || res.statusCode === 404,
        `${method} ${url} without a key → ${res.statusCode} ${res.body.slice(0, 60)}`,
      );
      assert.equal(engine.calls.length, 0);
    });
  }
});

describe("unknown routes and methods", () => {
  for (const [method, url] of [
    ["GET", "/"],
    ["GET", "/nope"],
    ["POST", "/chat/completions"],
    ["GET", "/models"],
    ["GET", "/v2/models"],
    ["GET", "/v1x"],
  ] as const) {
    test(`${method} ${url} (not /v1) → 404 without a key`, async (t) => {
      const { app } = setup(t);
      const res = await app.inject({ method, url });
      assert.equal(res.statusCode, 404);
      requestId(res);
      assert.equal(res.body, JSON.stringify(NOT_FOUND));
      assert.match(String(res.headers["content-type"]), /^application\/json/);
    });
  }

  for (const [method, url] of [
    ["GET", "/v1/chat/completions"],
    ["PUT", "/v1/chat/completions"],
    ["GET", "/v1/tokens/count"],
    ["POST", "/v1/models"],
    ["DELETE", "/v1/models"],
    ["POST", "/v1/stats"],
  ] as const) {
    test(`wrong method ${method} ${url} → 404 body with a key, 401 without`, async (t) => {
      const { app } = setup(t);
      const res = await app.inject({
        method,
        url,
        headers: AUTH,
        ...(method === "GET" || method === "DELETE" ? {} : { payload: {} }),
      });
      assert.equal(res.statusCode, 404);
      requestId(res);
      assert.equal(res.body, JSON.stringify(NOT_FOUND));
      const anon = await app.inject({ method, url });
      assert.equal(anon.statusCode, 401);
      assert.equal(anon.body, JSON.stringify(MISSING));
    });
  }
});

describe("x-request-id", () => {
  test("a well-formed caller id is echoed, on success, errors and streams", async (t) => {
    const { app } = setup(t);
    const ok = await app.inject({ method: "GET", url: "/v1/models", headers: { ...AUTH, "x-request-id": "abc-123" } });
    assert.equal(ok.statusCode, 200);
    assert.equal(ok.headers["x-request-id"], "abc-123");
    const anon = await app.inject({ method: "GET", url: "/v1/models", headers: { "x-request-id": "trace.id:42_x" } });
    assert.equal(anon.statusCode, 401);
    assert.equal(anon.headers["x-request-id"], "trace.id:42_x");
    const sse = await chat(
      app,
      { model: "lucena-coder-latest", messages: USER_HELLO, stream: true },
      { "x-request-id": "abc-124" },
    );
    assert.equal(sse.statusCode, 200);
    assert.match(String(sse.headers["content-type"]), /^text\/event-stream/);
    assert.equal(sse.headers["x-request-id"], "abc-124");
    const bad = await chat(app, { model: "lucena-coder-latest", messages: [] }, { "x-request-id": "abc-125" });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.headers["x-request-id"], "abc-125");
  });

  for (const [name, given] of [
    ["with spaces", "abc 123"],
    ["300 characters", "a".repeat(300)],
    ["with a slash", "a/b"],
    ["with a quote", 'a"b'],
    ["129 characters", "b".repeat(129)],
  ] as const) {
    test(`a malformed caller id (${name}) is replaced by a generated one`, async (t) => {
      const { app } = setup(t);
      const res = await app.inject({ method: "GET", url: "/v1/models", headers: { ...AUTH, "x-request-id": given } });
      assert.equal(res.statusCode, 200);
      const id = requestId(res);
      assert.notEqual(id, given);
      assert.match(id, /^req_[0-9A-Za-z]{20}$/);
    });
  }

  test("without a caller id each response gets a distinct generated id", async (t) => {
    const { app } = setup(t);
    const ids = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const res = await app.inject({ method: "GET", url: "/v1/models", headers: AUTH });
      const id = requestId(res);
      assert.match(id, /^req_[0-9A-Za-z]{20}$/);
      ids.add(id);
    }
    assert.equal(ids.size, 5);
  });
});

describe("GET /v1/models", () => {
  const FIELDS = [
    "id",
    "object",
    "created",
    "owned_by",
    "description",
    "name",
    "max_input_tokens",
    "max_output_tokens",
    "context_window",
    "default_shape",
    "available_shapes",
  ];

  test("lists the model with exactly the reference's fields, in order, from the config", async (t) => {
    const { app, config } = setup(t, { model: { default_shape: "terse" } });
    const res = await app.inject({ method: "GET", url: "/v1/models", headers: AUTH });
    assert.equal(res.statusCode, 200);
    requestId(res);
    assert.match(String(res.headers["content-type"]), /^application\/json/);
    const body = JSON.parse(res.body) as { object: string; data: Record<string, unknown>[] };
    assert.deepEqual(Object.keys(body), ["object", "data"]);
    assert.equal(body.object, "list");
    assert.equal(body.data.length, 1);
    const m = body.data[0];
    assert.deepEqual(Object.keys(m), FIELDS);
    assert.deepEqual(m, {
      id: config.id,
      object: "model",
      created: config.created,
      owned_by: config.owned_by,
      description: config.description,
      name: config.name,
      max_input_tokens: config.max_input_tokens,
      max_output_tokens: config.max_output_tokens,
      context_window: config.context_window,
      default_shape: "terse",
      available_shapes: ["terse", "plain"],
    });
  });

  test("the reference's own example: no shapes → default_shape null, available_shapes []", async (t) => {
    const { app } = setup(t, { model: { shapes: {}, default_shape: null, max_output_tokens: 16000 } });
    const res = await app.inject({ method: "GET", url: "/v1/models", headers: AUTH });
    assert.deepEqual(JSON.parse(res.body), {
      object: "list",
      data: [
        {
          id: "lucena-coder-latest",
          object: "model",
          created: 1700000000,
          owned_by: "lucena",
          description: "Lucena Coder: advanced code generation and understanding.",
          name: "Lucena Coder",
          max_input_tokens: 100000,
          max_output_tokens: 16000,
          context_window: 101000,
          default_shape: null,
          available_shapes: [],
        },
      ],
    });
  });

  for (const status of ["loading", "failed"] as const) {
    test(`works while the engine is ${status}`, async (t) => {
      const { app } = setup(t, { engine: new FakeEngine({ status }) });
      const res = await app.inject({ method: "GET", url: "/v1/models", headers: AUTH });
      assert.equal(res.statusCode, 200);
      const body = JSON.parse(res.body) as { data: { id: string }[] };
      assert.deepEqual(
        body.data.map((m) => m.id),
        ["lucena-coder-latest"],
      );
    });
  }

  test("a demo model says so in its description", async (t) => {
    const { app, config } = setup(t, { demo: true });
    const res = await app.inject({ method: "GET", url: "/v1/models", headers: AUTH });
    const body = JSON.parse(res.body) as { data: { description: string }[] };
    assert.equal(body.data[0].description, `${config.description} ${DEMO_NOTICE}`);
  });
});

describe("GET /v1/models/{id}", () => {
  test("the model object exactly as in the list, in any engine state", async (t) => {
    for (const status of ["ready", "loading", "failed"] as const) {
      const { app } = setup(t, { engine: new FakeEngine({ status }), demo: true });
      const list = await app.inject({ method: "GET", url: "/v1/models", headers: AUTH });
      const one = await app.inject({ method: "GET", url: "/v1/models/lucena-coder-latest", headers: AUTH });
      assert.equal(one.statusCode, 200, status);
      requestId(one);
      assert.deepEqual(JSON.parse(one.body), (JSON.parse(list.body) as { data: unknown[] }).data[0]);
    }
  });

  test("an id with slashes is read whole; an unknown id is a 404 naming it, in the reference's format", async (t) => {
    const { app } = setup(t, { model: { id: "org/coder-7b" } });
    assert.equal((await app.inject({ method: "GET", url: "/v1/models/org/coder-7b", headers: AUTH })).statusCode, 200);
    const res = await app.inject({ method: "GET", url: "/v1/models/nope", headers: AUTH });
    assertError(res, 404, "not_found", { message: /'nope' does not exist/ });
  });
});

describe("GET /v1/stats", () => {
  test("returns integer MiB memory figures", async (t) => {
    const { app } = setup(t);
    const res = await app.inject({ method: "GET", url: "/v1/stats", headers: AUTH });
    assert.equal(res.statusCode, 200);
    requestId(res);
    const body = JSON.parse(res.body) as Record<string, number>;
    for (const k of ["heap_used_mb", "heap_total_mb", "rss_mb"]) {
      assert.ok(Number.isInteger(body[k]) && body[k] > 0, `${k}: ${body[k]}`);
    }
    assert.ok(body.heap_used_mb <= body.heap_total_mb);
  });
});

describe("error format helpers sanity", () => {
  test("assertError accepts the not_found body and rejects a wrong status", async (t) => {
    const { app } = setup(t);
    const res = await app.inject({ method: "GET", url: "/nope" });
    assertError(res, 404, "not_found", { message: "Not found." });
    assert.throws(() => assertError(res, 400, "not_found"));
  });
});
