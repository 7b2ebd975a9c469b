import ms from "ms";
import { errors } from "../core/errors.js";
import type { KeyInfo, KeyLimits, KeyStore, NewKey, UsageSummary } from "./store.js";

/** An epoch-ms time as the JSON answers give times: whole unix seconds (null stays null). */
export const secs = (t: number | null): number | null => (t === null ? null : Math.floor(t / 1000));

/** A key as the admin API and `lucena keys … --json` show it (never the key or its hash). */
export function keyJson(k: KeyInfo) {
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

/** Runs a key request's parse for an HTTP route: its KeyRequestError becomes the API's 400 naming the field. */
export function parsedForApi<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof KeyRequestError) throw errors.invalidRequest(err.message, err.param);
    throw err;
  }
}

/** A limit as given: absent or null is none; otherwise a positive integer (a string of digits from the CLI). */
function parseLimit(v: unknown, param: string): number | null {
  if (v === undefined || v === null) return null;
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1)
    throw new KeyRequestError(`${param} must be a positive integer`, param);
  return n;
}

/** A list of model ids, as an array or a comma-separated string; absent or null: all models. */
function parseModels(v: unknown): string[] | null {
  if (v === undefined || v === null) return null;
  const list =
    typeof v === "string"
      ? v
          .split(",")
          .map((m) => m.trim())
          .filter(Boolean)
      : v;
  if (!Array.isArray(list) || list.length === 0 || !list.every((m) => typeof m === "string" && m.length > 0)) {
    throw new KeyRequestError("models must be a non-empty list of model ids", "models");
  }
  return list as string[];
}

function parseExpires(v: unknown): number | null {
  if (v === undefined || v === null) return null;
  // A bare number would be milliseconds to `ms`: `--expires 90` made a key born expired. A unit is required.
  if (typeof v !== "string" || !/^\s*\d+(\.\d+)?\s*[a-z]+\s*$/i.test(v)) {
    throw new KeyRequestError("expires needs a unit: a duration such as 30d, 12h, 90m or 45s", "expires");
  }
  const d = ms(v as ms.StringValue);
  if (typeof d !== "number" || !Number.isFinite(d) || d <= 0) {
    throw new KeyRequestError("expires must be a duration such as 30d, 12h, 90m or 45s", "expires");
  }
  return d;
}

/** A key's limits, models and expiry as a request gives them (durations read like `30d`, `12h`, `90m`). */
export function parseKeyLimits(r: Omit<KeyRequest, "name">): Omit<NewKey, "name" | "expiresAt"> {
  return {
    rpm: parseLimit(r.rpm, "rpm"),
    tpm: parseLimit(r.tpm, "tpm"),
    concurrency: parseLimit(r.concurrency, "concurrency"),
    expiresInMs: parseExpires(r.expires),
    models: parseModels(r.models),
  };
}

/** Checks a key request from the CLI, the admin API or the console. */
export function parseKeyRequest(r: KeyRequest): NewKey {
  if (typeof r.name !== "string" || r.name.trim() === "" || r.name.length > 200) {
    throw new KeyRequestError("name must be a non-empty string of at most 200 characters", "name");
  }
  return { name: r.name.trim(), ...parseKeyLimits(r) };
}

/**
 * A change of a key's limits: each of rpm, tpm, concurrency and models that the request gives replaces the key's
 * (null removes it); one it leaves out stays as it is.
 */
export function parseLimitChange(r: KeyRequest, current: KeyInfo): KeyLimits & { models: string[] | null } {
  for (const field of ["name", "expires"] as const) {
    if (r[field] !== undefined) throw new KeyRequestError(`${field} cannot be changed: make a new key`, field);
  }
  const pick = <T>(field: keyof KeyRequest, parse: () => T, kept: T): T => (r[field] === undefined ? kept : parse());
  return {
    rpm: pick("rpm", () => parseLimit(r.rpm, "rpm"), current.rpm),
    tpm: pick("tpm", () => parseLimit(r.tpm, "tpm"), current.tpm),
    concurrency: pick("concurrency", () => parseLimit(r.concurrency, "concurrency"), current.concurrency),
    models: pick("models", () => parseModels(r.models), current.models),
  };
}

export function createKey(store: KeyStore, r: KeyRequest) {
  const { key, info } = store.create(parseKeyRequest(r));
  const { id, ...rest } = keyJson(info);
  return { id, key, ...rest };
}
