// The console's Usage tab: bucket, key and model filters; token and request charts; totals; by key and by model.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, errorText } from "./api";
import { dateTimeUtc, num } from "./format";
import { ErrorText } from "./layout";
import type { ApiKey, Bucket, ServerInfo, UsageReport, UsageTotals } from "./types";
import { Totals, UsageCharts } from "./usage-view";

function Head({ first }: { first: string }) {
  return (
    <thead>
      <tr>
        <th>{first}</th>
        <th class="num">Requests</th>
        <th class="num">Prompt</th>
        <th class="num">Completion</th>
        <th class="num">Total tokens</th>
      </tr>
    </thead>
  );
}

function Cells({ r }: { r: UsageTotals }) {
  return (
    <>
      <td class="num">{num(r.requests)}</td>
      <td class="num">{num(r.prompt_tokens)}</td>
      <td class="num">{num(r.completion_tokens)}</td>
      <td class="num" data-testid="row-total-tokens">
        {String(r.total_tokens)}
      </td>
    </>
  );
}

function Empty() {
  return (
    <tr>
      <td colSpan={5} class="muted">
        No usage in this range.
      </td>
    </tr>
  );
}

export function UsageTab() {
  const [bucket, setBucket] = useState<Bucket>("hour");
  const [keyId, setKeyId] = useState("");
  const [model, setModel] = useState("");
  const [keys, setKeys] = useState<ApiKey[]>([]);
  const [models, setModels] = useState<string[]>([]);
  const [report, setReport] = useState<UsageReport | null>(null);
  const [error, setError] = useState<string | null>(null);
  const seq = useRef(0);

  useEffect(() => {
    api<{ data: ApiKey[] }>("/console/api/keys").then(
      (r) => setKeys(r.data),
      () => undefined,
    );
    api<ServerInfo>("/console/api/info").then(
      (r) => setModels(r.models.map((m) => m.id)),
      () => undefined,
    );
  }, []);

  useEffect(() => {
    const n = ++seq.current;
    const q = new URLSearchParams({ bucket });
    if (keyId) q.set("key_id", keyId);
    if (model) q.set("model", model);
    api<UsageReport>(`/console/api/usage?${q.toString()}`).then(
      (r) => {
        if (n !== seq.current) return;
        setReport(r);
        setError(null);
      },
      (e: unknown) => n === seq.current && setError(errorText(e)),
    );
  }, [bucket, keyId, model]);

  const modelIds = [...new Set([...models, ...(report?.by_model.map((m) => m.model) ?? [])])];
  return (
    <div>
      <div class="filters">
        <label class="field small">
          <span>Bucket</span>
          <select data-testid="bucket" value={bucket} onChange={(e) => setBucket(e.currentTarget.value as Bucket)}>
            <option value="hour">Hourly (48 h)</option>
            <option value="day">Daily (30 days)</option>
          </select>
        </label>
        <label class="field">
          <span>Key</span>
          <select data-testid="usage-key" value={keyId} onChange={(e) => setKeyId(e.currentTarget.value)}>
            <option value="">All keys</option>
            {keys.map((k) => (
              <option key={k.id} value={k.id}>
                {k.name} ({k.prefix}…)
              </option>
            ))}
          </select>
        </label>
        <label class="field">
          <span>Model</span>
          <select data-testid="usage-model" value={model} onChange={(e) => setModel(e.currentTarget.value)}>
            <option value="">All models</option>
            {modelIds.map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorText text={error} />
      {report && (
        <>
          <p class="muted">
            {dateTimeUtc(report.since)} – {dateTimeUtc(report.until)} (buckets are UTC hours and days)
          </p>
          <Totals t={report.totals} totalTestId="usage-total-tokens" />
          <div data-testid="usage-chart">
            <UsageCharts series={report.series} />
          </div>
          <h3>By key</h3>
          <div class="table-wrap">
            <table data-testid="usage-by-key">
              <Head first="Key" />
              <tbody>
                {report.by_key.length === 0 && <Empty />}
                {report.by_key.map((r) => (
                  <tr key={r.key_id} data-key-id={r.key_id}>
                    <td>{r.name}</td>
                    <Cells r={r} />
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <h3>By model</h3>
          <div class="table-wrap">
            <table data-testid="usage-by-model">
              <Head first="Model" />
              <tbody>
                {report.by_model.length === 0 && <Empty />}
                {report.by_model.map((r) => (
                  <tr key={r.model} data-model={r.model}>
                    <td>{r.model}</td>
                    <Cells r={r} />
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
      {!report && !error && <p class="muted">Loading…</p>}
    </div>
  );
}
