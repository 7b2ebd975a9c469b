// `/console`: the operator's console: sign in with the admin token, then the requests, keys, usage and live tabs.
import { useEffect, useState } from "preact/hooks";
import { ApiError, api, errorText, onUnauthorized, resetCsrf } from "./api";
import { LiveTab } from "./console-live";
import { KeysTab } from "./console-keys";
import { RequestsTab } from "./console-requests";
import { UsageTab } from "./console-usage";
import { ErrorText, mount } from "./layout";
import type { Session } from "./types";

const tabs = [
  { id: "requests", label: "Requests" },
  { id: "keys", label: "Keys" },
  { id: "usage", label: "Usage" },
  { id: "live", label: "Live" },
] as const;
type Tab = (typeof tabs)[number]["id"];

function tabFromHash(): Tab {
  const h = location.hash.replace(/^#/, "");
  return tabs.find((t) => t.id === h)?.id ?? "requests";
}

function SignIn({ adminConfigured, onSignedIn }: { adminConfigured: boolean; onSignedIn: () => void }) {
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api<{ signed_in: boolean }>("/console/api/session", { method: "POST", body: { token } });
      resetCsrf();
      setToken("");
      onSignedIn();
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? "That admin token is not right." : errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="narrow">
      <h1>Console</h1>
      {!adminConfigured && (
        <p class="card notice warning">
          This server has no admin token, so nobody can sign in. Set <code>admin_token</code> in the server's
          configuration and restart it.
        </p>
      )}
      <form class="card form" data-testid="signin-form" method="post" onSubmit={submit}>
        <label class="field">
          <span>Admin token</span>
          <input
            name="token"
            type="password"
            autocomplete="current-password"
            required
            value={token}
            onInput={(e) => setToken(e.currentTarget.value)}
          />
        </label>
        <ErrorText text={error} testid="signin-error" />
        <button type="submit" data-testid="signin-submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </section>
  );
}

function Console() {
  const [session, setSession] = useState<Session | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tab, setTab] = useState<Tab>(tabFromHash);

  const loadSession = () =>
    api<Session>("/console/api/session").then(
      (s) => {
        setSession(s);
        setError(null);
      },
      (e: unknown) => setError(errorText(e)),
    );

  useEffect(() => {
    void loadSession();
    onUnauthorized(() => setSession((s) => ({ admin_configured: s?.admin_configured ?? true, signed_in: false })));
    return () => onUnauthorized(null);
  }, []);

  const choose = (t: Tab) => {
    setTab(t);
    history.replaceState(null, "", `#${t}`);
  };

  const signOut = async () => {
    try {
      await api("/console/api/session", { method: "DELETE" });
    } catch {
      // Signed out on this side whatever the server said.
    }
    resetCsrf();
    setSession((s) => ({ admin_configured: s?.admin_configured ?? true, signed_in: false }));
  };

  if (error) return <ErrorText text={`Could not reach the console: ${error}`} />;
  if (!session) return <p class="muted">Loading…</p>;
  if (!session.signed_in)
    return (
      <SignIn
        adminConfigured={session.admin_configured}
        onSignedIn={() => setSession({ admin_configured: true, signed_in: true })}
      />
    );
  return (
    <section>
      <div class="console-head">
        <div class="tabs" role="tablist">
          {tabs.map((t) => (
            <button
              key={t.id}
              type="button"
              role="tab"
              class="tab"
              aria-selected={tab === t.id}
              data-testid={`tab-${t.id}`}
              onClick={() => choose(t.id)}
            >
              {t.label}
            </button>
          ))}
        </div>
        <button type="button" class="secondary" data-testid="signout" onClick={signOut}>
          Sign out
        </button>
      </div>
      <div role="tabpanel">
        {tab === "requests" && <RequestsTab />}
        {tab === "keys" && <KeysTab />}
        {tab === "usage" && <UsageTab />}
        {tab === "live" && <LiveTab />}
      </div>
    </section>
  );
}

mount("console", Console);
