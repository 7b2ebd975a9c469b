import ms from "ms";
import type { KeyInfo, KeyStore, NewKey, UsageSummary } from "./store.js";

/** A key as the admin API and `lucena keys … --json` show it (never the key or its hash). */
export function keyJson(k: KeyInfo) {
  const secs = (t: number | null) => (t === null ? null : Math.floor(t / 1000));
  return {
    id: k.id,
    name: k.name,
    prefix: k.prefix,
    created_at: secs(k.createdAt),
    expires_at: secs(k.expiresAt),
    revoked_at: secs(k.revokedAt),
    rpm: k.rpm,
    tpm: k.tpm,
    concurrency: k.concurrency,
    models: k.models,
  };
}

export function usageJson(u: UsageSummary) {
  return {
    key_id: u.keyId,
    requests: u.requests,
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.totalTokens,
    /** Requests among these still running, or left unfinished by a server that died: counted as they were left. */
    in_progress: u.inProgress,
  };
}

export class KeyRequestError extends Error {
  constructor(
    message: string,
    readonly param: string,
  ) {
    super(message);
  }
}

export interface KeyRequest {
  name?: unknown;
  rpm?: unknown;
  tpm?: unknown;
  concurrency?: unknown;
  expires?: unknown;
  models?: unknown;
}

/** Checks a key request from the CLI or the admin API; durations read like `30d`, `12h`, `90m`. */
export function parseKeyRequest(r: KeyRequest): NewKey {
  if (typeof r.name !== "string" || r.name.trim() === "" || r.name.length > 200) {
    throw new KeyRequestError("name must be a non-empty string of at most 200 characters", "name");
  }
  const limit = (v: unknown, param: string): number | null => {
    if (v === undefined || v === null) return null;
    const n = typeof v === "string" ? Number(v) : v;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1)
      throw new KeyRequestError(`${param} must be a positive integer`, param);
    return n;
  };
  let expiresInMs: number | null = null;
  if (r.expires !== undefined && r.expires !== null) {
    // A bare number would be milliseconds to `ms`: `--expires 90` made a key born expired. A unit is required.
    if (typeof r.expires !== "string" || !/^\s*\d+(\.\d+)?\s*[a-z]+\s*$/i.test(r.expires)) {
      throw new KeyRequestError("expires needs a unit: a duration such as 30d, 12h, 90m or 45s", "expires");
    }
    const d = ms(r.expires as ms.StringValue);
    if (typeof d !== "number" || !Number.isFinite(d) || d <= 0) {
      throw new KeyRequestError("expires must be a duration such as 30d, 12h, 90m or 45s", "expires");
    }
    expiresInMs = d;
  }
  let models: string[] | null = null;
  if (r.models !== undefined && r.models !== null) {
    const list =
      typeof r.models === "string"
        ? r.models
            .split(",")
            .map((m) => m.trim())
            .filter(Boolean)
        : r.models;
    if (!Array.isArray(list) || list.length === 0 || !list.every((m) => typeof m === "string" && m.length > 0)) {
      throw new KeyRequestError("models must be a non-empty list of model ids", "models");
    }
    models = list as string[];
  }
  return {
    name: r.name.trim(),
    rpm: limit(r.rpm, "rpm"),
    tpm: limit(r.tpm, "tpm"),
    concurrency: limit(r.concurrency, "concurrency"),
    expiresInMs,
    models,
  };
}

export function createKey(store: KeyStore, r: KeyRequest) {
  const { key, info } = store.create(parseKeyRequest(r));
  const { id, ...rest } = keyJson(info);
  return { id, key, ...rest };
}
