import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { mkdtempSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { UsageLedger, type UsageJournal } from "../../src/keys/ledger.js";
import { RateLimiter } from "../../src/keys/limiter.js";
import { KeyStore } from "../../src/keys/store.js";
import {
  AUTH,
  chat,
  fakePromptTokens,
  setup,
  TEST_MODEL,
  USER_HELLO,
  type TestAppOptions,
} from "../helpers/fake-engine.js";
import { until } from "../helpers/until.js";

const GOOD = { model: TEST_MODEL.id, messages: USER_HELLO };
const GOOD_PROMPT = fakePromptTokens([{ content: TEST_MODEL.system_prompt! }, ...USER_HELLO]);
type Row = {
  request_id: string;
  prompt_tokens: number;
  completion_tokens: number;
  status: number;
  state: string;
  finish_reason: string | null;
};

/** An app around a FakeEngine whose ledger is a real store in a fresh directory. */
function withLedger(t: TestContext, opts: TestAppOptions = {}) {
  const store = new KeyStore(mkdtempSync(join(tmpdir(), "lucena-usage-")));
  const ledger = new UsageLedger(store, pino({ level: "silent" }));
  const built = setup(t, { usage: opts.usage ?? ledger, ...opts });
  t.after(() => store.close());
  const row = (id: string) =>
    (store as unknown as { db: { prepare(s: string): { get(id: string): Row | undefined } } }).db
      .prepare("SELECT * FROM usage WHERE request_id = ?")
      .get(id);
  return { ...built, store, ledger, row };
}

function streamRequest(app: FastifyInstance, id: string) {
  return app.inject({
    method: "POST",
    url: "/v1/chat/completions",
    headers: { ...AUTH, "content-type": "application/json", "x-request-id": id },
    payload: JSON.stringify({ ...GOOD, stream: true }),
    payloadAsStream: true,
  });
}

describe("usage rows as a stream runs", () => {
  test("the row exists before the first byte and counts at least every token the client has received", async (t) => {
    const { app, engine, row } = withLedger(t);
    engine.script = Array.from({ length: 40 }, (_, i) => `t${i} `);
    engine.delayMs = 5;
    const res = await streamRequest(app, "usage-stream-1");
    let seen = "";
    let first = true;
    for await (const chunk of res.stream()) {
      if (first) {
        assert.equal(row("usage-stream-1")?.state, "in_progress", "the row was there before the stream's first byte");
        first = false;
      }
      seen += String(chunk);
      const received = (seen.match(/"content":"t\d+ "/g) ?? []).length;
      const r = row("usage-stream-1")!;
      assert.ok(r.completion_tokens >= received, `${received} tokens received, the row says ${r.completion_tokens}`);
    }
    const r = row("usage-stream-1")!;
    assert.deepEqual(
      [r.state, r.status, r.prompt_tokens, r.completion_tokens, r.finish_reason],
      ["complete", 200, GOOD_PROMPT, 40, "stop"],
    );
  });

  test("cut while queued: no prompt evaluated, client_closed (499), and the key's token budget gets it all back", async (t) => {
    const limiter = new RateLimiter();
    const keys = {
      verify: () => ({ keyId: "k1", limits: { rpm: null, tpm: 100_000, concurrency: null }, models: null }),
    };
    const { app, engine, row } = withLedger(t, { keys, limiter });
    engine.delayMs = 60_000; // never reaches its first token: it is waiting for a sequence
    const res = await streamRequest(app, "usage-queued-1");
    for await (const chunk of res.stream()) if (String(chunk).includes('"role"')) break;
    (res.raw.res as unknown as { destroy(): void }).destroy();
    const r = await until(
      "the row's end",
      () => row("usage-queued-1")?.state !== "in_progress" && row("usage-queued-1"),
    );
    assert.deepEqual(
      [r.state, r.status, r.prompt_tokens, r.completion_tokens, r.finish_reason],
      ["client_closed", 499, 0, 0, "cancelled"],
    );

    engine.delayMs = 0;
    const next = await chat(app, { ...GOOD, max_tokens: 10 });
    assert.equal(next.statusCode, 200);
    assert.equal(
      next.headers["x-ratelimit-remaining-tokens"],
      String(100_000 - GOOD_PROMPT - 10),
      "the cut request spent none of the minute's tokens",
    );
  });

  test("cut mid-stream: the completion tokens delivered, the prompt evaluated, client_closed", async (t) => {
    const { app, engine, row } = withLedger(t);
    engine.script = Array.from({ length: 50 }, (_, i) => `t${i} `);
    engine.delayMs = 10;
    const res = await streamRequest(app, "usage-cut-1");
    let seen = "";
    for await (const chunk of res.stream()) {
      seen += String(chunk);
      if (seen.includes('"content":"t2 "')) break;
    }
    (res.raw.res as unknown as { destroy(): void }).destroy();
    const r = await until("the row's end", () => row("usage-cut-1")?.state !== "in_progress" && row("usage-cut-1"));
    assert.deepEqual(
      [r.state, r.status, r.prompt_tokens, r.finish_reason],
      ["client_closed", 499, GOOD_PROMPT, "cancelled"],
    );
    assert.ok(r.completion_tokens >= 3 && r.completion_tokens < 50, `${r.completion_tokens}`);
  });
});

describe("usage rows of JSON requests", () => {
  test("the row is final before the answer's first byte is written", async (t) => {
    const raws = new Map<string, ServerResponse>();
    const ends: Array<{ id: string; headersSent: boolean; state: string }> = [];
    const store = new KeyStore(mkdtempSync(join(tmpdir(), "lucena-usage-")));
    t.after(() => store.close());
    const ledger = new UsageLedger(store, pino({ level: "silent" }));
    const usage: UsageJournal = {
      open: (s) => {
        const entry = ledger.open(s);
        return {
          deliver: (c) => entry.deliver(c),
          end: (f) => {
            ends.push({ id: s.requestId, headersSent: raws.get(s.requestId)!.headersSent, state: f.state });
            entry.end(f);
          },
        };
      },
    };
    const { app } = setup(t, { usage });
    app.addHook("onRequest", async (req, reply) => void raws.set(req.id, reply.raw));
    const res = await chat(app, GOOD, { "x-request-id": "usage-json-1" });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(ends, [{ id: "usage-json-1", headersSent: false, state: "complete" }]);
    assert.deepEqual(store.usage(), [
      {
        keyId: "config-1",
        requests: 1,
        promptTokens: GOOD_PROMPT,
        completionTokens: 3,
        totalTokens: GOOD_PROMPT + 3,
        inProgress: 0,
      },
    ]);
  });

  test("abandoned before its answer: client_closed (499), never 200, no completion tokens delivered", async (t) => {
    const { app, engine, row } = withLedger(t);
    engine.script = Array.from({ length: 50 }, (_, i) => `t${i} `);
    engine.delayMs = 10;
    await app.listen({ host: "127.0.0.1", port: 0 });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const ac = new AbortController();
    const pending = fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      signal: ac.signal,
      headers: { ...AUTH, "content-type": "application/json", "x-request-id": "usage-json-cut" },
      body: JSON.stringify(GOOD),
    }).catch(() => null);
    await until("a few tokens", () => engine.calls.length === 1 && engine.active === 1 && row("usage-json-cut"));
    await new Promise((r) => setTimeout(r, 50));
    ac.abort();
    await pending;
    const r = await until(
      "the row's end",
      () => row("usage-json-cut")?.state !== "in_progress" && row("usage-json-cut"),
    );
    assert.deepEqual(
      [r.state, r.status, r.prompt_tokens, r.completion_tokens, r.finish_reason],
      ["client_closed", 499, GOOD_PROMPT, 0, "cancelled"],
    );
  });
});
