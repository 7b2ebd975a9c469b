import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import OpenAI from "openai";
import { testModel } from "../helpers/models.js";
import { cliPath } from "../helpers/paths.js";
import { startServer, type RunningServer } from "../helpers/server.js";

const MODEL = "lucena-coder-latest";
const run = promisify(execFile);
/** Servers of the running suite, stopped after it. */
const servers: RunningServer[] = [];
/** Every server started in this file: their logs are searched for keys at the end. */
const started: RunningServer[] = [];

async function start(opts: Parameters<typeof startServer>[0]): Promise<RunningServer> {
  const s = await startServer({ model: testModel(), ...opts });
  servers.push(s);
  started.push(s);
  return s;
}

async function cli(dataDir: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [cliPath, "keys", ...args, "--data-dir", dataDir]);
  return stdout;
}

async function createKey(dataDir: string, ...args: string[]): Promise<{ id: string; key: string }> {
  return JSON.parse(await cli(dataDir, "create", "--json", ...args)) as { id: string; key: string };
}

function chat(s: RunningServer, key: string, body: Record<string, unknown> = {}) {
  return fetch(`${s.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL, max_tokens: 2, messages: [{ role: "user", content: "hi" }], ...body }),
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("keys: create, use, revoke, expire, restrict", () => {
  after(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  test("first start creates one key, shown once in a 0600 file (no terminal), never again", async () => {
    const a = await start({ noConfigKey: true });
    const file = join(a.dataDir, "first-key.txt");
    assert.ok(existsSync(file));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const key = /(sk-lucena-[A-Za-z0-9]{43})/.exec(readFileSync(file, "utf8"))?.[1];
    assert.ok(key, "the file holds the key");
    assert.match(
      readFileSync(file, "utf8"),
      /curl http:\/\/127\.0\.0\.1:\d+\/v1\/models -H "Authorization: Bearer sk-lucena-/,
    );
    assert.equal((await fetch(`${a.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status, 200);
    assert.ok(
      a.logs.some((l) => l.includes("first-key.txt")),
      "the log says where the key is",
    );
    await a.stop();
    const b = await start({ noConfigKey: true, dataDir: a.dataDir });
    assert.ok(!b.logs.some((l) => l.includes("first API key")), "no second first key");
    assert.ok(
      b.logs.some((l) => l.includes("lucena keys create --name NAME --data-dir")),
      "the second start says how to make a key",
    );
    const listed = JSON.parse(await cli(a.dataDir, "list", "--json")) as unknown[];
    assert.equal(listed.length, 1);
  });

  test("with keys configured (LUCENA_API_KEYS), no first key is made", async () => {
    const s = await start({});
    assert.ok(!existsSync(join(s.dataDir, "first-key.txt")));
    assert.ok(!s.logs.some((l) => l.includes("first API key")));
    assert.deepEqual(JSON.parse(await cli(s.dataDir, "list", "--json")), []);
  });

  test("create → use → revoke: the next request gets 401, also in a second process on the same data directory", async () => {
    const a = await start({});
    const b = await start({ dataDir: a.dataDir });
    const { id, key } = await createKey(a.dataDir, "--name", "alice");
    assert.match(key, /^sk-lucena-[A-Za-z0-9]{43}$/);
    for (const s of [a, b]) assert.equal((await chat(s, key)).status, 200);

    const listed = await cli(a.dataDir, "list");
    assert.ok(listed.includes(key.slice(0, 14)) && !listed.includes(key), "list shows the prefix, never the key");
    const db = new Database(join(a.dataDir, "lucena.db"), { readonly: true });
    const stored = JSON.stringify(db.prepare("SELECT * FROM keys").all());
    db.close();
    assert.ok(!stored.includes(key), "the store holds no key, only hashes");

    await cli(a.dataDir, "revoke", id);
    // Each request checks whether the store changed since the last (SQLite's data_version): the very next request
    // after the revocation's commit is refused, in this process and in the other.
    for (const s of [a, b]) {
      const res = await chat(s, key);
      assert.equal(res.status, 401);
      assert.deepEqual(await res.json(), {
        error: { message: "Invalid API Key", type: "gateway_auth_error", code: 401 },
      });
    }
  });

  test("an expired key gets 401", async () => {
    const s = await start({});
    // Waits on the key's own expiry time, however long the machine took to get here, never on a fixed sleep.
    const lasting = await createKey(s.dataDir, "--name", "lasting", "--expires", "1d");
    assert.equal((await chat(s, lasting.key)).status, 200);
    const { key, expires_at } = JSON.parse(
      await cli(s.dataDir, "create", "--json", "--name", "brief", "--expires", "500ms"),
    ) as { key: string; expires_at: number };
    while (Date.now() <= (expires_at + 1) * 1000) await sleep(50);
    const res = await chat(s, key);
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: { type: string } }).error.type, "gateway_auth_error");
  });

  test("a key restricted to some models gets 404 for the others, as if they did not exist", async () => {
    const model = testModel();
    const s = await start({
      config: {
        models: [
          { id: "open-model", source: model },
          { id: "secret-model", source: model, parallel: 1 },
        ],
      },
    });
    const { key } = await createKey(s.dataDir, "--name", "narrow", "--models", "open-model");
    const list = (await fetch(`${s.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } }).then((r) =>
      r.json(),
    )) as { data: Array<{ id: string }> };
    assert.deepEqual(
      list.data.map((m) => m.id),
      ["open-model"],
    );
    assert.equal((await chat(s, key, { model: "open-model" })).status, 200);
    const hidden = await chat(s, key, { model: "secret-model" });
    const missing = await chat(s, key, { model: "no-such-model" });
    assert.equal(hidden.status, 404);
    const h = (await hidden.json()) as { error: { message: string; type: string } };
    const m = (await missing.json()) as { error: { message: string; type: string } };
    assert.equal(
      h.error.message.replace("secret-model", "X"),
      m.error.message.replace("no-such-model", "X"),
      "same answer as for a model that does not exist",
    );
    assert.ok(!h.error.message.includes("secret-model'.") && !/Available.*secret-model/.test(h.error.message));
    const count = await fetch(`${s.url}/v1/tokens/count`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "secret-model", messages: [{ role: "user", content: "x" }] }),
    });
    assert.equal(count.status, 404);
    // GET /v1/models/{id}: the hidden model is as missing as one that does not exist.
    const retrieve = (id: string, k: string) =>
      fetch(`${s.url}/v1/models/${id}`, { headers: { authorization: `Bearer ${k}` } });
    const open = await retrieve("open-model", key);
    assert.equal(open.status, 200);
    assert.deepEqual(await open.json(), list.data[0]);
    const [hiddenOne, missingOne] = [await retrieve("secret-model", key), await retrieve("no-such-model", key)];
    assert.deepEqual([hiddenOne.status, missingOne.status], [404, 404]);
    const [ho, mo] = [
      (await hiddenOne.json()) as { error: { message: string } },
      (await missingOne.json()) as { error: { message: string } },
    ];
    assert.equal(ho.error.message.replace("secret-model", "X"), mo.error.message.replace("no-such-model", "X"));
    assert.equal((await retrieve("secret-model", s.key)).status, 200, "an unrestricted key sees it");
    assert.equal((await chat(s, s.key, { model: "secret-model" })).status, 200, "an unrestricted key uses it");
  });
});

describe("limits", () => {
  after(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  test("200 simultaneous requests against a limit of 7 requests per minute admit exactly 7", async () => {
    const s = await start({ config: { models: [{ queue_size: 256 }] } });
    const { key } = await createKey(s.dataDir, "--name", "rpm", "--rpm", "7");
    const statuses = await Promise.all(
      Array.from({ length: 200 }, () => chat(s, key).then(async (r) => (await r.arrayBuffer(), r.status))),
    );
    assert.equal(statuses.filter((x) => x === 200).length, 7);
    assert.equal(statuses.filter((x) => x === 429).length, 193);
  });

  test("200 simultaneous requests against a concurrency limit of 3 admit exactly 3", async () => {
    const s = await start({ config: { models: [{ queue_size: 256 }] } });
    const { key } = await createKey(s.dataDir, "--name", "conc", "--concurrency", "3");
    const statuses = await Promise.all(
      Array.from({ length: 200 }, () =>
        chat(s, key, { max_tokens: 300 }).then(async (r) => (await r.arrayBuffer(), r.status)),
      ),
    );
    assert.equal(statuses.filter((x) => x === 200).length, 3);
    assert.equal(statuses.filter((x) => x === 429).length, 197);
  });

  test("429 carries Retry-After and the x-ratelimit headers; a refused request spends no quota", async () => {
    const s = await start({});
    const { key } = await createKey(s.dataDir, "--name", "both", "--rpm", "3", "--tpm", "2000");
    // Refused by the token limit: asks for more than 2000 tokens at once. It must not use up a request.
    const big = await chat(s, key, { max_tokens: 2500 });
    assert.equal(big.status, 429);
    assert.equal(((await big.json()) as { error: { type: string } }).error.type, "rate_limit_error");
    const ok: Response[] = [];
    for (let i = 0; i < 3; i++) ok.push(await chat(s, key));
    assert.deepEqual(
      ok.map((r) => r.status),
      [200, 200, 200],
      "all three requests of the minute are still there",
    );
    assert.equal(ok[0].headers.get("x-ratelimit-limit-requests"), "3");
    assert.equal(ok[0].headers.get("x-ratelimit-remaining-requests"), "2");
    assert.equal(ok[2].headers.get("x-ratelimit-remaining-requests"), "0");
    assert.equal(ok[0].headers.get("x-ratelimit-limit-tokens"), "2000");
    const refused = await chat(s, key);
    assert.equal(refused.status, 429);
    const retry = Number(refused.headers.get("retry-after"));
    assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
    assert.equal(refused.headers.get("x-ratelimit-limit-requests"), "3");
    assert.equal(refused.headers.get("x-ratelimit-remaining-requests"), "0");
    assert.match(refused.headers.get("x-ratelimit-reset-requests") ?? "", /^\d+(\.\d)?s$|^\d+m\d+s$/);
    assert.ok(refused.headers.get("x-ratelimit-remaining-tokens") !== null);
    assert.ok(refused.headers.get("x-request-id"));
  });
});

describe("usage ledger", () => {
  after(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  test("one row per request that reached a model, equal to the usage the client received, cut streams included", async () => {
    const s = await start({});
    const { id, key } = await createKey(s.dataDir, "--name", "ledger");
    const client = new OpenAI({ apiKey: key, baseURL: `${s.url}/v1`, maxRetries: 0 });
    const received: Array<{ prompt: number; completion: number }> = [];

    const json = await client.chat.completions.create({
      model: MODEL,
      max_tokens: 9,
      messages: [{ role: "user", content: "one" }],
    });
    received.push({ prompt: json.usage!.prompt_tokens, completion: json.usage!.completion_tokens });
    const stream = await client.chat.completions.create({
      model: MODEL,
      max_tokens: 11,
      stream: true,
      messages: [{ role: "user", content: "two" }],
    });
    for await (const chunk of stream)
      if (chunk.usage) received.push({ prompt: chunk.usage.prompt_tokens, completion: chunk.usage.completion_tokens });

    // A stream the client cuts after a few chunks: its row holds what was produced until the cut.
    const ac = new AbortController();
    const cut = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-request-id": "ledger-cut-1" },
      body: JSON.stringify({
        model: MODEL,
        stream: true,
        max_tokens: 6000,
        messages: [{ role: "user", content: "three" }],
      }),
      signal: ac.signal,
    });
    const reader = cut.body!.getReader();
    let chunks = 0;
    while (chunks < 3) {
      const { value, done } = await reader.read();
      assert.ok(!done);
      chunks += new TextDecoder()
        .decode(value)
        .split("\n\n")
        .filter((e) => e.includes('"content"')).length;
    }
    ac.abort();
    // A refused request (bad input) never reached a model: no row.
    assert.equal((await chat(s, key, { temperature: 9 })).status, 400);

    const dbPath = join(s.dataDir, "lucena.db");
    let rows: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 100 && rows.length < 3; i++) {
      await sleep(30);
      const db = new Database(dbPath, { readonly: true });
      rows = db.prepare("SELECT * FROM usage WHERE key_id = ? ORDER BY id").all(id) as Array<Record<string, unknown>>;
      db.close();
    }
    assert.equal(rows.length, 3, "three requests reached the model; the refused one did not");
    assert.deepEqual(
      rows.slice(0, 2).map((r) => ({ prompt: r.prompt_tokens, completion: r.completion_tokens })),
      received,
      "the rows hold exactly what the clients were told",
    );
    assert.deepEqual(
      rows.slice(0, 2).map((r) => [r.finish_reason, r.stream]),
      [
        ["length", 0],
        ["length", 1],
      ],
    );
    const cutRow = rows[2];
    assert.equal(cutRow.request_id, "ledger-cut-1");
    assert.equal(cutRow.finish_reason, "cancelled");
    assert.ok(
      (cutRow.completion_tokens as number) >= chunks && (cutRow.completion_tokens as number) < 6000,
      `${cutRow.completion_tokens} tokens produced before the cut`,
    );
    assert.ok((cutRow.ttft_ms as number) >= 0 && (cutRow.duration_ms as number) > 0);

    const summed = JSON.parse(await cli(s.dataDir, "usage", id, "--json")) as {
      requests: number;
      prompt_tokens: number;
      completion_tokens: number;
      total_tokens: number;
    };
    assert.equal(summed.requests, 3);
    assert.equal(
      summed.completion_tokens,
      rows.reduce((n, r) => n + (r.completion_tokens as number), 0),
    );
    assert.equal(summed.total_tokens, summed.prompt_tokens + summed.completion_tokens);
  });
});

describe("admin API", () => {
  after(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  test("issues, lists and revokes keys with the admin token; an ordinary key never reaches it", async () => {
    const admin = "admin-token-0123456789abcdef";
    const s = await start({ env: { LUCENA_ADMIN_TOKEN: admin } });
    const call = (method: string, path: string, token: string, body?: unknown) =>
      fetch(`${s.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
    const created = await call("POST", "/admin/v1/keys", admin, {
      name: "via-http",
      rpm: 10,
      models: [MODEL],
      expires: "1d",
    });
    assert.equal(created.status, 201);
    const made = (await created.json()) as {
      id: string;
      key: string;
      rpm: number;
      models: string[];
      expires_at: number;
    };
    assert.equal(made.rpm, 10);
    assert.deepEqual(made.models, [MODEL]);
    assert.ok(made.expires_at > Date.now() / 1000);
    assert.equal((await chat(s, made.key)).status, 200);

    assert.equal((await call("GET", "/admin/v1/keys", made.key)).status, 401, "an API key is not an admin token");
    assert.equal((await call("GET", "/admin/v1/keys", s.key)).status, 401);
    assert.equal((await call("GET", "/admin/v1/keys", "")).status, 401);
    assert.equal((await call("GET", "/v1/models", admin)).status, 401, "the admin token is not an API key");
    const bad = await call("POST", "/admin/v1/keys", admin, { name: "x", rpm: -1 });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { param: string } }).error.param, "rpm");

    const list = (await call("GET", "/admin/v1/keys", admin).then((r) => r.json())) as { data: Array<{ id: string }> };
    assert.ok(list.data.some((k) => k.id === made.id));
    assert.ok(!JSON.stringify(list).includes(made.key));
    const patched = await call("PATCH", `/admin/v1/keys/${made.id}`, admin, { rpm: 3, models: null });
    assert.equal(patched.status, 200);
    const changed = (await patched.json()) as { rpm: number; models: unknown };
    assert.deepEqual([changed.rpm, changed.models], [3, null]);
    assert.equal((await chat(s, made.key)).headers.get("x-ratelimit-limit-requests"), "3");
    assert.equal((await call("PATCH", `/admin/v1/keys/${made.id}`, admin, { rpm: 0 })).status, 400);
    const revoked = await call("DELETE", `/admin/v1/keys/${made.id}`, admin);
    assert.equal(revoked.status, 200);
    assert.ok(((await revoked.json()) as { revoked_at: number | null }).revoked_at !== null);
    assert.equal((await chat(s, made.key)).status, 401);
    assert.equal((await call("DELETE", "/admin/v1/keys/key_nope", admin)).status, 404);
    const usage = (await call("GET", `/admin/v1/usage?key_id=${made.id}`, admin).then((r) => r.json())) as {
      data: Array<{ requests: number }>;
    };
    assert.equal(usage.data[0].requests, 2);
  });

  test("without an admin token there is no admin API", async () => {
    const s = await start({});
    assert.equal(
      (await fetch(`${s.url}/admin/v1/keys`, { headers: { authorization: `Bearer ${s.key}` } })).status,
      404,
    );
  });
});

describe("log hygiene", () => {
  test("no line that any server of this file wrote to stdout or stderr holds a key", () => {
    const lines = started.flatMap((s) => s.logs);
    assert.ok(lines.length > 50, `${lines.length} lines checked`);
    assert.deepEqual(
      lines.filter((l) => l.includes("sk-lucena-")),
      [],
    );
  });
});
