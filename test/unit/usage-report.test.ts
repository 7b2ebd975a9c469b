import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { KeyStore } from "../../src/keys/store.js";
import { UsageReports } from "../../src/keys/usage-report.js";

const HOUR = 3_600_000;

/** A store whose ledger holds these rows, each written at its own time. */
function ledgerWith(
  t: { after(fn: () => void): void },
  rows: Array<{ model: string; completion: number; at: number }>,
) {
  const store = new KeyStore(mkdtempSync(join(tmpdir(), "lucena-report-")));
  t.after(() => store.close());
  const setTime = store.database.prepare("UPDATE usage SET created_at = ? WHERE id = ?");
  for (const r of rows) {
    const id = store.recordUsage({
      requestId: `r${r.at}${r.model}`,
      keyId: null,
      model: r.model,
      promptTokens: 1,
      completionTokens: r.completion,
      status: 200,
      finishReason: "stop",
      ttftMs: 1,
      durationMs: 1,
      stream: false,
    });
    setTime.run(r.at, id);
  }
  return new UsageReports(store.database);
}

test("the tables are ordered by each group's sum, not by one of its rows", (t) => {
  const now = Date.UTC(2026, 11, 4, 12, 30);
  const reports = ledgerWith(t, [
    { model: "two-rows", completion: 500, at: now - 2000 },
    { model: "two-rows", completion: 500, at: now - 1000 },
    { model: "one-row", completion: 600, at: now - 1500 },
  ]);
  const report = reports.report({ bucket: "hour", now });
  assert.deepEqual(
    report.by_model.map((m) => [m.model, m.total_tokens]),
    [
      ["two-rows", 1002],
      ["one-row", 601],
    ],
  );
});

test("buckets: UTC hours and days, the current one last, a row at a bucket's start in that bucket", (t) => {
  const now = Date.UTC(2026, 11, 4, 12, 30);
  const thisHour = Date.UTC(2026, 11, 4, 12);
  const reports = ledgerWith(t, [
    { model: "m", completion: 1, at: thisHour },
    { model: "m", completion: 2, at: thisHour - 1 },
    { model: "m", completion: 4, at: thisHour - 47 * HOUR },
    { model: "m", completion: 8, at: thisHour - 47 * HOUR - 1 },
  ]);
  const hourly = reports.report({ bucket: "hour", now });
  assert.equal(hourly.series.length, 48);
  assert.equal(hourly.until, (thisHour + HOUR) / 1000);
  assert.equal(hourly.since, (thisHour - 47 * HOUR) / 1000);
  assert.equal(hourly.series.at(-1)!.completion_tokens, 1);
  assert.equal(hourly.series.at(-2)!.completion_tokens, 2);
  assert.equal(hourly.series[0].completion_tokens, 4, "the first bucket; the row before the range is left out");
  assert.equal(hourly.totals.completion_tokens, 7);
  const daily = reports.report({ bucket: "day", now });
  assert.equal(daily.series.length, 30);
  assert.equal(daily.series.at(-1)!.t, Date.UTC(2026, 11, 4) / 1000);
  assert.equal(daily.series.at(-1)!.completion_tokens, 3);
  assert.equal(daily.totals.completion_tokens, 15);
});
