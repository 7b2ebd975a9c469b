// The console's Keys tab: create a key (shown once), list keys with their usage, edit limits inline, revoke.
import { useCallback, useEffect, useState } from "preact/hooks";
import { api, errorText } from "./api";
import { CopyButton } from "./copy";
import { dateTime, limit, modelInput, modelList, num } from "./format";
import { LimitInputs } from "./limit-inputs";
import { ErrorText } from "./layout";
import { emptyLimits, limitsBody, type LimitFields } from "./limits";
import type { ApiKey } from "./types";

function CreateForm({ onCreated }: { onCreated: () => void }) {
  const [name, setName] = useState("");
  const [fields, setFields] = useState<LimitFields>(emptyLimits);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [created, setCreated] = useState<{ name: string; key: string } | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      const body = { name: name.trim(), ...limitsBody(fields, false, true) };
      setBusy(true);
      const k = await api<ApiKey & { key: string }>("/console/api/keys", { method: "POST", body });
      setCreated({ name: k.name, key: k.key });
      setName("");
      setFields(emptyLimits);
      onCreated();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <form class="card form" data-testid="key-create-form" onSubmit={submit}>
        <label class="field">
          <span>Name</span>
          <input name="name" required maxLength={100} value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <LimitInputs value={fields} onChange={setFields} withExpires disabled={busy} />
        <ErrorText text={error} />
        <button type="submit" disabled={busy}>
          {busy ? "Creating…" : "Create key"}
        </button>
      </form>
      {created && (
        <div class="card notice success">
          <p>
            <strong>New key “{created.name}”. This is shown once: store it now.</strong>
          </p>
          <p class="link-line">
            <code class="secret" data-testid="created-key">
              {created.key}
            </code>
            <CopyButton text={created.key} />
            <button type="button" class="secondary" onClick={() => setCreated(null)}>
              Done
            </button>
          </p>
        </div>
      )}
    </>
  );
}

function fieldsOf(k: ApiKey): LimitFields {
  const s = (n: number | null) => (n === null ? "" : String(n));
  return { rpm: s(k.rpm), tpm: s(k.tpm), concurrency: s(k.concurrency), models: modelInput(k.models), expires: "" };
}

function KeyRow({ k, onChanged }: { k: ApiKey; onChanged: () => void }) {
  const [fields, setFields] = useState(() => fieldsOf(k));
  const [armed, setArmed] = useState(false);
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  // Reset the inputs when the saved limits change (not on every reload, which would drop unsaved edits).
  const saved = JSON.stringify([k.rpm, k.tpm, k.concurrency, k.models, k.status]);
  useEffect(() => setFields(fieldsOf(k)), [saved]);
  useEffect(() => {
    if (!armed) return;
    const t = setTimeout(() => setArmed(false), 5000);
    return () => clearTimeout(t);
  }, [armed]);

  const run = async (what: () => Promise<unknown>, done: string) => {
    setError(null);
    setNote(null);
    setBusy(true);
    try {
      await what();
      setNote(done);
      onChanged();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  const path = `/console/api/keys/${encodeURIComponent(k.id)}`;
  const save = () => {
    let body: Record<string, unknown>;
    try {
      body = limitsBody(fields, true, false);
    } catch (e) {
      setError(errorText(e));
      return;
    }
    void run(() => api(path, { method: "PATCH", body }), "Saved.");
  };
  const revoke = () => {
    if (!armed) return setArmed(true);
    setArmed(false);
    void run(() => api(`${path}/revoke`, { method: "POST", body: {} }), "Revoked.");
  };
  const editable = k.status !== "revoked";
  return (
    <li class={`card key key-${k.status}`} data-testid="key-row" data-key-id={k.id} data-status={k.status}>
      <div class="request-head">
        <div>
          <strong>{k.name}</strong> <code>{k.prefix}…</code> <span class={`badge badge-${k.status}`}>{k.status}</span>
        </div>
        <span class="muted">
          {num(k.requests)} requests · {num(k.total_tokens)} tokens
        </span>
      </div>
      <p class="muted">
        Created {dateTime(k.created_at)} · {k.expires_at ? `expires ${dateTime(k.expires_at)}` : "never expires"}
        {k.revoked_at ? ` · revoked ${dateTime(k.revoked_at)}` : ""}
      </p>
      {editable ? (
        <LimitInputs value={fields} onChange={setFields} withExpires={false} disabled={busy} />
      ) : (
        <p class="muted">
          {limit(k.rpm)} rpm · {limit(k.tpm)} tpm · {limit(k.concurrency)} concurrent · {modelList(k.models)}
        </p>
      )}
      <ErrorText text={error} />
      {note && <p class="ok">{note}</p>}
      {editable && (
        <div class="actions">
          <button type="button" data-testid="save-limits" disabled={busy} onClick={save}>
            Save limits
          </button>
          <button
            type="button"
            class={armed ? "danger" : "secondary"}
            data-testid="revoke"
            disabled={busy}
            onClick={revoke}
            onBlur={() => setArmed(false)}
          >
            {armed ? "Confirm revoke" : "Revoke"}
          </button>
        </div>
      )}
    </li>
  );
}

export function KeysTab() {
  const [keys, setKeys] = useState<ApiKey[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(async () => {
    try {
      setKeys((await api<{ data: ApiKey[] }>("/console/api/keys")).data);
      setError(null);
    } catch (e) {
      setError(errorText(e));
    }
  }, []);
  useEffect(() => void load(), [load]);
  return (
    <div>
      <h2>Create a key</h2>
      <CreateForm onCreated={() => void load()} />
      <div class="section-head">
        <h2>Keys</h2>
        <button type="button" class="secondary" onClick={() => void load()}>
          Refresh
        </button>
      </div>
      <ErrorText text={error} />
      {keys === null ? (
        !error && <p class="muted">Loading…</p>
      ) : keys.length ? (
        <ul class="cards">
          {keys.map((k) => (
            <KeyRow key={k.id} k={k} onChanged={() => void load()} />
          ))}
        </ul>
      ) : (
        <p class="muted">No keys yet.</p>
      )}
    </div>
  );
}
