// The key holder's own usage in the playground: GET /console/api/my-usage with the key; totals and a small chart.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, errorText } from "./api";
import { dateTime, limit, modelList } from "./format";
import type { Bucket, MyUsage } from "./types";
import { Totals, UsageCharts } from "./usage-view";

/** `version` changes after each answer, to load the usage again. */
export function MyUsagePanel({ apiKey, version }: { apiKey: string; version: number }) {
  const [bucket, setBucket] = useState<Bucket>("hour");
  const [usage, setUsage] = useState<MyUsage | null>(null);
  const [error, setError] = useState<string | null>(null);
  const seq = useRef(0);

  useEffect(() => {
    const n = ++seq.current;
    api<MyUsage>(`/console/api/my-usage?bucket=${bucket}`, { bearer: apiKey }).then(
      (u) => {
        if (n !== seq.current) return;
        setUsage(u);
        setError(null);
      },
      (e: unknown) => n === seq.current && setError(errorText(e)),
    );
  }, [apiKey, bucket, version]);

  return (
    <section class="card" data-testid="pg-usage">
      <div class="section-head">
        <h2>Your usage</h2>
        <select aria-label="Bucket" value={bucket} onChange={(e) => setBucket(e.currentTarget.value as Bucket)}>
          <option value="hour">Last 48 hours</option>
          <option value="day">Last 30 days</option>
        </select>
      </div>
      {error && <p class="muted">Usage unavailable: {error}</p>}
      {usage && (
        <>
          <p class="muted">
            Key “{usage.key.name}” (<code>{usage.key.prefix}…</code>): {limit(usage.key.rpm)} requests/min ·{" "}
            {limit(usage.key.tpm)} tokens/min · {limit(usage.key.concurrency)} at a time · {modelList(usage.key.models)}
            {usage.key.expires_at ? ` · expires ${dateTime(usage.key.expires_at)}` : ""}
          </p>
          <Totals t={usage.totals} totalTestId="pg-usage-total" />
          <UsageCharts series={usage.series} compact />
        </>
      )}
    </section>
  );
}
