// The console's Requests tab: pending access requests to approve (with limits) or reject; decided ones below.
import { useCallback, useEffect, useState } from "preact/hooks";
import { api, errorText } from "./api";
import { dateTime, limit, modelList } from "./format";
import { LimitInputs } from "./limit-inputs";
import { ErrorText } from "./layout";
import { emptyLimits, limitsBody, type LimitFields } from "./limits";
import type { AccessRequest } from "./types";

function PendingRow({ r, onDone }: { r: AccessRequest; onDone: () => void }) {
  const [fields, setFields] = useState<LimitFields>(emptyLimits);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const decide = async (action: "approve" | "reject") => {
    setError(null);
    let body: Record<string, unknown> = {};
    try {
      if (action === "approve") body = limitsBody(fields, false, true);
    } catch (e) {
      setError(errorText(e));
      return;
    }
    setBusy(true);
    try {
      await api<AccessRequest>(`/console/api/requests/${encodeURIComponent(r.id)}/${action}`, {
        method: "POST",
        body,
      });
      onDone();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <li class="card request" data-testid="request-row" data-request-id={r.id} data-status={r.status}>
      <div class="request-head">
        <strong data-testid="request-name">{r.name}</strong>
        <span class="muted">{dateTime(r.created_at)}</span>
      </div>
      <p class="contact">
        Contact: <span>{r.contact}</span>
      </p>
      <p class="purpose">{r.purpose}</p>
      <LimitInputs value={fields} onChange={setFields} withExpires disabled={busy} />
      <ErrorText text={error} />
      <div class="actions">
        <button type="button" data-testid="approve" disabled={busy} onClick={() => void decide("approve")}>
          Approve
        </button>
        <button type="button" class="danger" data-testid="reject" disabled={busy} onClick={() => void decide("reject")}>
          Reject
        </button>
      </div>
    </li>
  );
}

function DecidedRow({ r }: { r: AccessRequest }) {
  const l = r.limits;
  return (
    <tr data-testid="request-row" data-request-id={r.id} data-status={r.status}>
      <td>
        <span data-testid="request-name">{r.name}</span>
        <div class="muted">{r.contact}</div>
      </td>
      <td class="purpose-cell">{r.purpose}</td>
      <td>
        <span class={`badge badge-${r.status}`}>{r.status}</span>
      </td>
      <td>{dateTime(r.decided_at)}</td>
      <td class="muted">
        {l
          ? `${limit(l.rpm)} rpm · ${limit(l.tpm)} tpm · ${limit(l.concurrency)} concurrent · ${modelList(l.models)}` +
            (l.expires_at ? ` · until ${dateTime(l.expires_at)}` : "")
          : "–"}
        {r.key_id && <div>key {r.key_id}</div>}
      </td>
    </tr>
  );
}

export function RequestsTab() {
  const [data, setData] = useState<AccessRequest[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(async () => {
    try {
      const r = await api<{ data: AccessRequest[] }>("/console/api/requests?status=all");
      setData(r.data);
      setError(null);
    } catch (e) {
      setError(errorText(e));
    }
  }, []);
  useEffect(() => void load(), [load]);

  if (!data) return error ? <ErrorText text={error} /> : <p class="muted">Loading…</p>;
  const pending = data.filter((r) => r.status === "pending");
  const decided = data.filter((r) => r.status !== "pending");
  return (
    <div>
      <div class="section-head">
        <h2>Pending requests</h2>
        <button type="button" class="secondary" onClick={() => void load()}>
          Refresh
        </button>
      </div>
      <ErrorText text={error} />
      {pending.length ? (
        <ul class="cards">
          {pending.map((r) => (
            <PendingRow key={r.id} r={r} onDone={() => void load()} />
          ))}
        </ul>
      ) : (
        <p class="muted">No pending requests.</p>
      )}
      <h2>Decided</h2>
      {decided.length ? (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>Purpose</th>
                <th>Status</th>
                <th>Decided</th>
                <th>Limits</th>
              </tr>
            </thead>
            <tbody>
              {decided.map((r) => (
                <DecidedRow key={r.id} r={r} />
              ))}
            </tbody>
          </table>
        </div>
      ) : (
        <p class="muted">Nothing decided yet.</p>
      )}
    </div>
  );
}
