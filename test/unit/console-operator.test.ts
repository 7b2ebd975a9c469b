import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { assertError, chat, TEST_MODEL, USER_HELLO } from "../helpers/fake-engine.js";
import { Browser, consoleApp } from "../helpers/console.js";

type KeyRow = {
  id: string;
  status: string;
  rpm: number | null;
  models: string[] | null;
  total_tokens: number;
  requests: number;
};

describe("the operator's keys", () => {
  test("create (shown once), edit limits (null clears), revoke: the key follows at once", async (t) => {
    const { app, store } = consoleApp(t);
    const operator = new Browser(app);
    await operator.signIn();
    const made = await operator.post("/console/api/keys", { name: "ci bot", rpm: 2, models: TEST_MODEL.id });
    assert.equal(made.statusCode, 201, made.body);
    const { id, key } = made.json();
    assert.match(key, /^sk-lucena-/);
    const auth = { authorization: `Bearer ${key}` };
    const listed = (await operator.json("/console/api/keys")).data as KeyRow[];
    assert.deepEqual(
      listed.map((k) => [k.id, k.status, k.rpm, k.models]),
      [[id, "active", 2, [TEST_MODEL.id]]],
    );
    assert.ok(!JSON.stringify(listed).includes(key), "the list never holds the key");

    const first = await chat(app, { model: TEST_MODEL.id, messages: USER_HELLO }, auth);
    assert.equal(first.headers["x-ratelimit-limit-requests"], "2");
    const patched = await operator.request({ method: "PATCH", url: `/console/api/keys/${id}`, payload: { rpm: 7 } });
    assert.equal(patched.statusCode, 200, patched.body);
    assert.deepEqual([patched.json().rpm, patched.json().models], [7, [TEST_MODEL.id]], "models kept");
    const second = await chat(app, { model: TEST_MODEL.id, messages: USER_HELLO }, auth);
    assert.equal(second.headers["x-ratelimit-limit-requests"], "7", "the next request sees the new limit");
    const cleared = await operator.request({ method: "PATCH", url: `/console/api/keys/${id}`, payload: { rpm: null } });
    assert.equal(cleared.json().rpm, null);
    const third = await chat(app, { model: TEST_MODEL.id, messages: USER_HELLO }, auth);
    assert.equal(third.headers["x-ratelimit-limit-requests"], undefined);
    assertError(
      await operator.request({ method: "PATCH", url: `/console/api/keys/${id}`, payload: { tpm: -1 } }),
      400,
      "invalid_request_error",
      { param: "tpm" },
    );
    assertError(
      await operator.request({ method: "PATCH", url: `/console/api/keys/${id}`, payload: { name: "x" } }),
      400,
      "invalid_request_error",
      { param: "name" },
    );

    const revoked = await operator.post(`/console/api/keys/${id}/revoke`);
    assert.equal(revoked.statusCode, 200);
    assert.ok(revoked.json().revoked_at > 0);
    assertError(await chat(app, { model: TEST_MODEL.id, messages: USER_HELLO }, auth), 401, "gateway_auth_error");
    assert.equal(((await operator.json("/console/api/keys")).data as KeyRow[])[0].status, "revoked");
    assertError(await operator.post("/console/api/keys/key_nope/revoke"), 404, "not_found");
    assertError(
      await operator.request({ method: "PATCH", url: `/console/api/keys/${id}`, payload: { rpm: 3 } }),
      400,
      "invalid_request_error",
      { param: "id" },
    );
    assert.equal(store.list().length, 1);
  });
});

describe("usage over time and the live view", () => {
  test("the report's totals, per key and per model, match the ledger; a key holder sees only their own", async (t) => {
    const { app, store, engine } = consoleApp(t);
    const operator = new Browser(app);
    await operator.signIn();
    const a = (await operator.post("/console/api/keys", { name: "a" })).json().key as string;
    const b = (await operator.post("/console/api/keys", { name: "b" })).json().key as string;
    // b's one row is larger than each of a's, a's sum larger than b's: the tables are ordered by the sums.
    engine.script = Array.from({ length: 10 }, () => " x");
    for (const [key, maxTokens] of [
      [a, 5],
      [a, 5],
      [b, 8],
    ] as const) {
      const res = await chat(
        app,
        { model: TEST_MODEL.id, messages: USER_HELLO, max_tokens: maxTokens },
        { authorization: `Bearer ${key}` },
      );
      assert.equal(res.statusCode, 200);
    }
    const ledger = store.usage();
    const tokens = (keyId: string) => ledger.find((u) => u.keyId === keyId)!.totalTokens;
    const [keyA, keyB] = store.list();

    for (const bucket of ["hour", "day"]) {
      const report = await operator.json(`/console/api/usage?bucket=${bucket}`);
      const totals = report.totals as { requests: number; total_tokens: number };
      assert.equal(totals.requests, 3);
      assert.equal(totals.total_tokens, tokens(keyA.id) + tokens(keyB.id));
      const series = report.series as Array<{ t: number; prompt_tokens: number; completion_tokens: number }>;
      assert.equal(series.length, bucket === "hour" ? 48 : 30);
      assert.equal(
        series.reduce((s, p) => s + p.prompt_tokens + p.completion_tokens, 0),
        totals.total_tokens,
        "the series adds up to the totals",
      );
      assert.ok(series.at(-1)!.completion_tokens > 0, "this hour's (day's) bucket is the last");
      const byKey = report.by_key as Array<{ key_id: string; name: string; total_tokens: number; requests: number }>;
      assert.deepEqual(byKey.map((k) => [k.name, k.requests, k.total_tokens]).sort(), [
        ["a", 2, tokens(keyA.id)],
        ["b", 1, tokens(keyB.id)],
      ]);
      assert.deepEqual(
        (report.by_model as Array<{ model: string; requests: number }>).map((m) => [m.model, m.requests]),
        [[TEST_MODEL.id, 3]],
      );
    }
    const onlyB = await operator.json(`/console/api/usage?bucket=hour&key_id=${keyB.id}`);
    assert.equal((onlyB.totals as { requests: number }).requests, 1);
    assertError(await operator.request({ url: "/console/api/usage?bucket=week" }), 400, "invalid_request_error", {
      param: "bucket",
    });
    assertError(
      await operator.request({ url: `/console/api/usage?key_id=${keyA.id}&key_id=${keyB.id}` }),
      400,
      "invalid_request_error",
      { param: "key_id" },
    );

    const mine = await app.inject({
      url: "/console/api/my-usage?bucket=day",
      headers: { authorization: `Bearer ${b}` },
    });
    assert.equal(mine.statusCode, 200, mine.body);
    const body = mine.json();
    assert.equal(body.key.name, "b");
    assert.equal(body.totals.requests, 1);
    assert.equal(body.totals.total_tokens, tokens(keyB.id));
    assert.equal(body.by_key, undefined, "a key holder sees no other key");
    assert.deepEqual((await app.inject({ url: "/console/api/my-usage" })).json(), { error: "Missing API Key" });
  });

  test("the live view: each model's counters, tokens over the last minute, and the recent errors", async (t) => {
    const { app } = consoleApp(t);
    const operator = new Browser(app);
    await operator.signIn();
    assert.equal((await chat(app, { model: TEST_MODEL.id, messages: USER_HELLO, max_tokens: 4 })).statusCode, 200);
    assert.equal((await chat(app, { model: "nope", messages: USER_HELLO })).statusCode, 404);
    await chat(app, { model: TEST_MODEL.id, messages: USER_HELLO }, { authorization: "Bearer sk-lucena-wrong" });
    const live = await operator.json("/console/api/live");
    const [model] = live.models as Array<Record<string, unknown>>;
    assert.equal(model.id, TEST_MODEL.id);
    assert.equal(model.status, "ready");
    assert.equal(model.requests_last_minute, 1);
    assert.ok((model.tokens_per_second as number) > 0);
    const errs = live.recent_errors as Array<{ status: number; route: string | null }>;
    assert.deepEqual(
      errs.map((e) => e.status),
      [401, 404],
      "newest first",
    );
    assert.ok(!JSON.stringify(live).includes("sk-lucena-wrong"));
  });
});
