import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import Database from "better-sqlite3";
import { pino } from "pino";
import { UsageLedger } from "../../src/keys/ledger.js";
import { KeyStore } from "../../src/keys/store.js";

const dir = () => mkdtempSync(join(tmpdir(), "lucena-ledger-"));
const mode = (path: string) => statSync(path).mode & 0o777;
type Row = Record<string, unknown>;

function rows(dataDir: string): Row[] {
  const db = new Database(join(dataDir, "lucena.db"), { readonly: true });
  try {
    return db.prepare("SELECT * FROM usage ORDER BY id").all() as Row[];
  } finally {
    db.close();
  }
}

/** The usage table as the first release made it, with two rows: one answered, one whose client left. */
function firstReleaseDb(dataDir: string): void {
  const db = new Database(join(dataDir, "lucena.db"));
  db.exec(`
    CREATE TABLE usage (
      id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, key_id TEXT, model TEXT NOT NULL,
      prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, status INTEGER NOT NULL,
      finish_reason TEXT, ttft_ms REAL, duration_ms REAL NOT NULL, stream INTEGER NOT NULL, created_at INTEGER NOT NULL
    );
    INSERT INTO usage VALUES (1, 'old-ok', 'k1', 'm', 10, 5, 200, 'stop', 1.5, 20, 0, 1700000000000);
    INSERT INTO usage VALUES (2, 'old-cut', 'k1', 'm', 10, 3, 200, 'cancelled', 1.5, 20, 1, 1700000000001);
  `);
  db.close();
}

describe("usage table migration", () => {
  test("a first-release database gains the state column, keeps its rows, marks the cut ones client_closed", () => {
    const d = dir();
    firstReleaseDb(d);
    const store = new KeyStore(d);
    store.close();
    const [ok, cut] = rows(d);
    assert.deepEqual(
      [ok.request_id, ok.status, ok.state, ok.prompt_tokens, ok.completion_tokens],
      ["old-ok", 200, "complete", 10, 5],
    );
    assert.deepEqual(
      [cut.request_id, cut.status, cut.state, cut.completion_tokens],
      ["old-cut", 499, "client_closed", 3],
    );
    const db = new Database(join(d, "lucena.db"), { readonly: true });
    // Every migration applied: the first (usage states) and those after it (the console's tables).
    assert.equal(db.pragma("user_version", { simple: true }), 2);
    assert.ok(db.prepare("SELECT name FROM sqlite_master WHERE name = 'access_requests'").get());
    db.close();

    // Opening again changes nothing; a server of the first release can still write its rows.
    new KeyStore(d).close();
    const old = new Database(join(d, "lucena.db"));
    old
      .prepare(
        `INSERT INTO usage (request_id, key_id, model, prompt_tokens, completion_tokens, status, finish_reason,
      ttft_ms, duration_ms, stream, created_at) VALUES ('older-server', 'k1', 'm', 1, 1, 200, 'stop', 1, 1, 0, 1)`,
      )
      .run();
    old.close();
    assert.deepEqual(
      rows(d).map((r) => [r.request_id, r.state]),
      [
        ["old-ok", "complete"],
        ["old-cut", "client_closed"],
        ["older-server", "complete"],
      ],
    );
  });
});

describe("usage rows while a request runs", () => {
  test("a row is in_progress from open, kept at or ahead of what was delivered, about once an interval, then final", () => {
    const d = dir();
    const store = new KeyStore(d);
    let writes = 0;
    const update = store.updateUsage.bind(store);
    store.updateUsage = (...args) => {
      writes++;
      update(...args);
    };
    let now = 0;
    const ledger = new UsageLedger(store, pino({ level: "silent" }), { aheadMs: 1000, now: () => now });
    const entry = ledger.open({ requestId: "r1", keyId: "k1", model: "m", stream: true, maxCompletionTokens: 5000 });
    assert.deepEqual(
      rows(d).map((r) => [r.request_id, r.state, r.status, r.prompt_tokens, r.completion_tokens]),
      [["r1", "in_progress", 200, 0, 0]],
      "the row exists before anything is delivered",
    );
    // 2,000 tokens at 20 a second (a token every 50 ms): the row is never behind, and never more than about
    // one second of tokens ahead.
    let maxAhead = 0;
    for (let n = 1; n <= 2000; n++) {
      now += 50;
      entry.deliver({ promptTokens: 30, completionTokens: n, ttftMs: 5, durationMs: now });
      const row = rows(d)[0];
      assert.ok((row.completion_tokens as number) >= n, `token ${n}: the row says ${row.completion_tokens}`);
      maxAhead = Math.max(maxAhead, (row.completion_tokens as number) - n);
      assert.equal(row.prompt_tokens, 30);
    }
    assert.ok(maxAhead <= 21, `at most about a second ahead: ${maxAhead}`);
    assert.ok(writes <= 100 + 10, `about one write a second over 100 s: ${writes}`);
    assert.equal(rows(d)[0].state, "in_progress");
    assert.deepEqual(store.usage("k1"), [
      {
        keyId: "k1",
        requests: 1,
        promptTokens: 30,
        completionTokens: rows(d)[0].completion_tokens,
        totalTokens: 30 + (rows(d)[0].completion_tokens as number),
        inProgress: 1,
      },
    ]);

    entry.end({
      promptTokens: 30,
      completionTokens: 2000,
      ttftMs: 5,
      durationMs: now,
      status: 200,
      state: "complete",
      finishReason: "length",
    });
    entry.end({
      promptTokens: 1,
      completionTokens: 1,
      ttftMs: 1,
      durationMs: 1,
      status: 500,
      state: "complete",
      finishReason: "error",
    });
    const [row] = rows(d);
    assert.deepEqual(
      [row.state, row.status, row.prompt_tokens, row.completion_tokens, row.finish_reason],
      ["complete", 200, 30, 2000, "length"],
    );
    assert.equal(store.usage("k1")[0].inProgress, 0);
    store.close();
  });

  test("the row is never committed beyond the request's most completion tokens; a JSON request's status is 0 until it answers", () => {
    const d = dir();
    const store = new KeyStore(d);
    const ledger = new UsageLedger(store, pino({ level: "silent" }));
    const entry = ledger.open({ requestId: "r2", keyId: null, model: "m", stream: false, maxCompletionTokens: 3 });
    assert.deepEqual(
      rows(d).map((r) => [r.status, r.state, r.stream]),
      [[0, "in_progress", 0]],
    );
    entry.deliver({ promptTokens: 7, completionTokens: 2, ttftMs: 1, durationMs: 1 });
    assert.equal(rows(d)[0].completion_tokens, 3);
    entry.end({
      promptTokens: 7,
      completionTokens: 0,
      ttftMs: 1,
      durationMs: 2,
      status: 499,
      state: "client_closed",
      finishReason: "cancelled",
    });
    assert.deepEqual(
      rows(d).map((r) => [r.status, r.state, r.completion_tokens]),
      [[499, "client_closed", 0]],
    );
    store.close();
  });
});

describe("data directory and file modes", () => {
  test("a data directory the store makes is 0700; the database and its WAL and shared-memory files are 0600", () => {
    const d = join(dir(), "nested", "data");
    const store = new KeyStore(d);
    store.create({ name: "k" }); // a write: the WAL and shared-memory files exist now
    assert.equal(mode(d), 0o700);
    for (const f of ["lucena.db", "lucena.db-wal", "lucena.db-shm"]) assert.equal(mode(join(d, f)), 0o600, f);
    assert.deepEqual(store.warnings, []);
    store.close();
  });

  test("an existing directory keeps its mode with a warning; existing database files are taken down to 0600", () => {
    const d = dir();
    chmodSync(d, 0o755);
    firstReleaseDb(d);
    chmodSync(join(d, "lucena.db"), 0o644);
    writeFileSync(join(d, "lucena.db-wal"), "");
    chmodSync(join(d, "lucena.db-wal"), 0o644);
    const store = new KeyStore(d);
    store.create({ name: "k" });
    assert.equal(mode(d), 0o755, "the operator's directory is left as it is");
    assert.equal(store.warnings.length, 1);
    assert.match(store.warnings[0], /open to other users \(mode 0755\)/);
    for (const f of ["lucena.db", "lucena.db-wal", "lucena.db-shm"]) assert.equal(mode(join(d, f)), 0o600, f);
    store.close();

    const privateDir = dir();
    mkdirSync(join(privateDir, "x"));
    chmodSync(privateDir, 0o700);
    const quiet = new KeyStore(privateDir);
    assert.deepEqual(quiet.warnings, []);
    quiet.close();
  });
});
