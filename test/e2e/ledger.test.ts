import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import Database from "better-sqlite3";
import { testModel } from "../helpers/models.js";
import { startServer, type RunningServer } from "../helpers/server.js";
import { until } from "../helpers/until.js";

const MODEL = "lucena-coder-latest";
const servers: RunningServer[] = [];
type Row = {
  request_id: string;
  prompt_tokens: number;
  completion_tokens: number;
  status: number;
  state: string;
  finish_reason: string | null;
};

function request(s: RunningServer, id: string, body: Record<string, unknown>, signal?: AbortSignal) {
  return fetch(`${s.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${s.key}`, "content-type": "application/json", "x-request-id": id },
    body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: `hello ${id}` }], ...body }),
    signal,
  });
}

/** A stream whose content chunks are counted as they arrive, until it ends or breaks. */
function openStream(s: RunningServer, id: string, maxTokens: number, signal?: AbortSignal) {
  const state = { id, received: 0, roleSeen: false, ended: null as Promise<void> | null };
  state.ended = (async () => {
    try {
      const res = await request(s, id, { stream: true, max_tokens: maxTokens }, signal);
      assert.equal(res.status, 200);
      let buffer = "";
      for await (const bytes of res.body!) {
        buffer += Buffer.from(bytes as Uint8Array).toString("utf8");
        const events = buffer.split("\n\n");
        buffer = events.pop()!;
        for (const e of events) {
          if (e.includes('"role"')) state.roleSeen = true;
          if (e.includes('"content"')) state.received++;
        }
      }
    } catch {
      /* cut by the test or by the server's death */
    }
  })();
  return state;
}

function readRows(s: RunningServer): Map<string, Row> {
  const db = new Database(join(s.dataDir, "lucena.db"), { readonly: true });
  try {
    return new Map((db.prepare("SELECT * FROM usage").all() as Row[]).map((r) => [r.request_id, r]));
  } finally {
    db.close();
  }
}

describe("usage ledger under faults", () => {
  after(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  test("SIGKILL under load: every request a client saw has a row with at least what the client received", async () => {
    const s = await startServer({ model: testModel(), config: { models: [{ id: MODEL, parallel: 6 }] } });
    servers.push(s);
    const streams = Array.from({ length: 4 }, (_, i) => openStream(s, `kill-stream-${i}`, 7000));
    const answers = new Map<string, { prompt: number; completion: number }>();
    let killed = false;
    let n = 0;
    const worker = async () => {
      while (!killed) {
        const id = `kill-json-${n++}`;
        try {
          const res = await request(s, id, { max_tokens: 3 });
          const body = (await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
          answers.set(id, { prompt: body.usage.prompt_tokens, completion: body.usage.completion_tokens });
        } catch {
          return; // the server died under this one: its client saw no answer
        }
      }
    };
    const workers = [worker(), worker()];
    await until(
      "streams under way and JSON answers",
      () => streams.every((st) => st.received >= 20) && answers.size >= 20,
    );
    s.proc.kill("SIGKILL");
    killed = true;
    await Promise.all([...streams.map((st) => st.ended), ...workers]);
    assert.equal(s.proc.signalCode ?? (await new Promise((r) => s.proc.once("exit", (_c, sig) => r(sig)))), "SIGKILL");

    const rows = readRows(s);
    for (const st of streams) {
      const row = rows.get(st.id);
      assert.ok(row, `${st.id} has a row`);
      assert.equal(row.state, "in_progress", `${st.id} was cut by the kill`);
      assert.equal(row.status, 200);
      assert.ok(
        row.completion_tokens >= st.received,
        `${st.id}: the client received ${st.received} chunks, the row says ${row.completion_tokens}`,
      );
      assert.ok(row.prompt_tokens > 0, "its prompt was evaluated");
    }
    for (const [id, got] of answers) {
      const row = rows.get(id);
      assert.ok(row, `${id}, answered, has a row`);
      assert.deepEqual(
        [row.state, row.status, row.prompt_tokens, row.completion_tokens],
        ["complete", 200, got.prompt, got.completion],
        id,
      );
    }
    // The ledger's files are the server's user's alone, the WAL and shared-memory files too.
    for (const f of ["lucena.db", "lucena.db-wal", "lucena.db-shm"])
      assert.equal(statSync(join(s.dataDir, f)).mode & 0o777, 0o600, f);
  });

  test("a stream cut while queued behind a busy sequence is charged no prompt and is client_closed", async () => {
    const s = await startServer({ model: testModel(), config: { models: [{ id: MODEL, parallel: 1 }] } });
    servers.push(s);
    const busyCut = new AbortController();
    const busy = openStream(s, "queued-busy", 7000, busyCut.signal);
    await until("the busy stream to stream", () => busy.received >= 3);
    const cut = new AbortController();
    const queued = openStream(s, "queued-cut", 50, cut.signal);
    await until("the queued stream's role chunk", () => queued.roleSeen);
    cut.abort();
    await queued.ended;
    await until("the queued row to end", () => readRows(s).get("queued-cut")?.state === "client_closed");
    busyCut.abort();
    await busy.ended;
    await until("the busy row to end", () => readRows(s).get("queued-busy")?.state === "client_closed");

    const rows = readRows(s);
    const q = rows.get("queued-cut")!;
    assert.deepEqual(
      [q.state, q.status, q.prompt_tokens, q.completion_tokens, q.finish_reason],
      ["client_closed", 499, 0, 0, "cancelled"],
    );
    const b = rows.get("queued-busy")!;
    assert.equal(b.status, 499);
    assert.ok(b.prompt_tokens > 0);
    assert.ok(b.completion_tokens >= busy.received, `${b.completion_tokens} >= ${busy.received}`);
  });
});
