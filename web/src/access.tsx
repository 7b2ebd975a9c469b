// `/access#<token>`: the status of an access request, and the one-time reveal of its key.
import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError, api, errorText } from "./api";
import { CopyButton } from "./copy";
import { dateTime, limit, modelList } from "./format";
import { ErrorText, mount } from "./layout";
import type { AccessStatusReply, RevealedKey } from "./types";

type Shown = AccessStatusReply["status"] | "unknown" | "loading";

function tokenFromHash(): string {
  const raw = location.hash.replace(/^#/, "").trim();
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

const sentences: Record<Exclude<Shown, "loading" | "unknown">, string> = {
  pending: "Your request is waiting for the operator. Come back to this link later.",
  rejected: "Your request was rejected by the operator.",
  approved: "Your request was approved: your key is ready to be revealed.",
  issued: "Your request was approved and the key was already shown. It cannot be shown again.",
};

function KeyBox({ k }: { k: RevealedKey }) {
  return (
    <div class="card notice success">
      <p>
        <strong>This is shown once: store it now.</strong> Nobody, not even the operator, can show it to you again.
      </p>
      <p class="link-line">
        <code class="secret" data-testid="issued-key">
          {k.key}
        </code>
        <CopyButton text={k.key} />
      </p>
      <p class="muted">
        Limits: {limit(k.rpm)} requests/min · {limit(k.tpm)} tokens/min · {limit(k.concurrency)} at a time ·{" "}
        {modelList(k.models)} · {k.expires_at ? `expires ${dateTime(k.expires_at)}` : "never expires"}
      </p>
      <p>
        Try it in the <a href="/playground">playground</a>, or see <a href="/">how to call the API</a>.
      </p>
    </div>
  );
}

function Access() {
  const [token, setToken] = useState(tokenFromHash);
  const [status, setStatus] = useState<Shown>("loading");
  const [reply, setReply] = useState<AccessStatusReply | null>(null);
  const [unknownText, setUnknownText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [key, setKey] = useState<RevealedKey | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const onHash = () => setToken(tokenFromHash());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);

  const load = useCallback(async () => {
    if (!token) {
      setStatus("unknown");
      setUnknownText("This link has no access token. Use the private link you got when you requested access.");
      return;
    }
    try {
      const r = await api<AccessStatusReply>("/console/api/access-requests/status", {
        method: "POST",
        body: { token },
      });
      setReply(r);
      setStatus(r.status);
      setError(null);
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 400)) {
        setStatus("unknown");
        setUnknownText("This link is not known to this server. Check that you copied the whole link.");
      } else {
        setError(errorText(e));
      }
    }
  }, [token]);

  useEffect(() => {
    setKey(null);
    void load();
  }, [load]);

  // While pending, look again now and then.
  useEffect(() => {
    if (status !== "pending") return;
    const t = setInterval(() => void load(), 15000);
    return () => clearInterval(t);
  }, [status, load]);

  const reveal = async () => {
    setBusy(true);
    setError(null);
    try {
      setKey(await api<RevealedKey>("/console/api/access-requests/key", { method: "POST", body: { token } }));
    } catch (e) {
      setError(errorText(e));
      if (e instanceof ApiError && e.status === 409) await load();
    } finally {
      setBusy(false);
    }
  };

  const sentence = status === "loading" ? "Loading…" : status === "unknown" ? unknownText : sentences[status];
  return (
    <section>
      <h1>Your access request</h1>
      <div class={`card status status-${status}`}>
        <p data-testid="access-status" data-status={status === "loading" ? undefined : status}>
          {sentence}
        </p>
        {reply && status !== "unknown" && (
          <p class="muted">
            Requested by {reply.name} on {dateTime(reply.created_at)}
            {reply.decided_at ? ` · decided on ${dateTime(reply.decided_at)}` : ""}
          </p>
        )}
        {status === "approved" && !key && (
          <button type="button" data-testid="reveal-key" onClick={reveal} disabled={busy}>
            {busy ? "Revealing…" : "Reveal my key"}
          </button>
        )}
      </div>
      {key && <KeyBox k={key} />}
      <ErrorText text={error} />
    </section>
  );
}

mount("access", Access);
