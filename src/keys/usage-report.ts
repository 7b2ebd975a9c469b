import type Database from "better-sqlite3";

/** Hourly buckets over the last 48 hours, or daily ones (UTC days) over the last 30 days. */
export type UsageBucket = "hour" | "day";

const SPAN: Record<UsageBucket, { ms: number; count: number }> = {
  hour: { ms: 3_600_000, count: 48 },
  day: { ms: 86_400_000, count: 30 },
};

export interface UsageCountsJson {
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
}

export interface UsageReport {
  bucket: UsageBucket;
  /** The first bucket's start and the end of the last one, unix seconds. */
  since: number;
  until: number;
  /** Every bucket of the range, in order, empty ones as zeros; `t` is the bucket's start (unix seconds). */
  series: Array<UsageCountsJson & { t: number }>;
  /** Absent when the filter asked for none (a key holder's own report). */
  by_key?: Array<UsageCountsJson & { key_id: string | null; name: string | null; total_tokens: number }>;
  by_model: Array<UsageCountsJson & { model: string; total_tokens: number }>;
  totals: UsageCountsJson & { total_tokens: number };
}

export interface UsageFilter {
  bucket: UsageBucket;
  keyId?: string | null;
  model?: string | null;
  /** Epoch ms; the clock by default. */
  now?: number;
  /** The by-key table (default true); false leaves it out, and its query with it. */
  byKey?: boolean;
}

const COUNTS = `COUNT(*) AS requests, COALESCE(SUM(u.prompt_tokens), 0) AS prompt_tokens,
                COALESCE(SUM(u.completion_tokens), 0) AS completion_tokens`;
const WHERE = `u.created_at >= @since AND u.created_at < @until
               AND (@keyId IS NULL OR u.key_id = @keyId) AND (@model IS NULL OR u.model = @model)`;

const total = <T extends UsageCountsJson>(r: T) => ({ ...r, total_tokens: r.prompt_tokens + r.completion_tokens });

/**
 * The usage ledger over time, for the console's charts: tokens and requests per bucket, per key and per model,
 * every row the ledger has (in-progress ones with what they have used so far). Read-only; the queries use the
 * ledger's time index.
 */
export class UsageReports {
  private readonly stmts;

  constructor(db: Database.Database) {
    this.stmts = {
      series: db.prepare<Record<string, unknown>, UsageCountsJson & { b: number }>(
        `SELECT CAST((u.created_at - @since) / @bucketMs AS INTEGER) AS b, ${COUNTS} FROM usage u WHERE ${WHERE} GROUP BY b`,
      ),
      byKey: db.prepare<Record<string, unknown>, UsageCountsJson & { key_id: string | null; name: string | null }>(
        `SELECT u.key_id AS key_id, k.name AS name, ${COUNTS} FROM usage u LEFT JOIN keys k ON k.id = u.key_id
         WHERE ${WHERE} GROUP BY u.key_id ORDER BY SUM(u.prompt_tokens) + SUM(u.completion_tokens) DESC, u.key_id`,
      ),
      byModel: db.prepare<Record<string, unknown>, UsageCountsJson & { model: string }>(
        `SELECT u.model AS model, ${COUNTS} FROM usage u WHERE ${WHERE}
         GROUP BY u.model ORDER BY SUM(u.prompt_tokens) + SUM(u.completion_tokens) DESC, u.model`,
      ),
    };
  }

  report(f: UsageFilter): UsageReport {
    const { ms, count } = SPAN[f.bucket];
    const now = f.now ?? Date.now();
    const until = Math.floor(now / ms) * ms + ms;
    const since = until - count * ms;
    const params = { since, until, bucketMs: ms, keyId: f.keyId ?? null, model: f.model ?? null };
    const series = Array.from({ length: count }, (_, i) => ({
      t: (since + i * ms) / 1000,
      requests: 0,
      prompt_tokens: 0,
      completion_tokens: 0,
    }));
    for (const { b, ...counts } of this.stmts.series.all(params)) Object.assign(series[b]!, counts);
    const totals = series.reduce(
      (sum, s) => ({
        requests: sum.requests + s.requests,
        prompt_tokens: sum.prompt_tokens + s.prompt_tokens,
        completion_tokens: sum.completion_tokens + s.completion_tokens,
      }),
      { requests: 0, prompt_tokens: 0, completion_tokens: 0 },
    );
    return {
      bucket: f.bucket,
      since: since / 1000,
      until: until / 1000,
      series,
      ...(f.byKey === false ? {} : { by_key: this.stmts.byKey.all(params).map(total) }),
      by_model: this.stmts.byModel.all(params).map(total),
      totals: total(totals),
    };
  }
}
