// The fetch helper: JSON in and out, the CSRF token on every state-changing call (fetched once, renewed and the
// call retried once on a 403), error messages taken from either error shape.

export type Method = "GET" | "POST" | "PATCH" | "DELETE";

export interface CallOptions {
  method?: Method;
  /** The JSON body; state-changing calls send `{}` when there is none. */
  body?: unknown;
  /** An API key: sent as `Authorization: Bearer …` (the key holder's routes); no CSRF token then. */
  bearer?: string;
  signal?: AbortSignal;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | number | undefined,
    readonly param: string | undefined,
    readonly retryAfterS: number | undefined,
  ) {
    super(message);
    this.name = "ApiError";
  }

  /**
   * A 403 on a state-changing console call: a missing or stale CSRF token (LUCENA_CSRF; the body's `code` is the
   * status, so the status is what tells). Any other 403 (requests closed) only costs one retry.
   */
  get isCsrf(): boolean {
    return this.status === 403;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The message of an error body: `{"error":{"message"}}`, `{"error":"…"}` or Fastify's `{"error","message"}`. */
export function errorFromBody(status: number, body: unknown, retryAfter: string | null): ApiError {
  let message = `The server answered ${status}.`;
  let code: string | number | undefined;
  let param: string | undefined;
  if (isRecord(body)) {
    const e = body.error;
    if (isRecord(e)) {
      if (typeof e.message === "string" && e.message) message = e.message;
      if (typeof e.code === "string" || typeof e.code === "number") code = e.code;
      if (typeof e.param === "string") param = e.param;
    } else if (typeof body.message === "string" && body.message) {
      message = body.message;
    } else if (typeof e === "string" && e) {
      message = e;
    }
    if (code === undefined && (typeof body.code === "string" || typeof body.code === "number")) code = body.code;
  } else if (typeof body === "string" && body.trim()) {
    message = body.trim().slice(0, 300);
  }
  const seconds = retryAfter === null ? NaN : Number(retryAfter);
  return new ApiError(message, status, code, param, Number.isFinite(seconds) ? seconds : undefined);
}

/** Reads a response body as JSON (or text when it is not JSON). */
export async function readBody(res: Response): Promise<unknown> {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** A human sentence for any error thrown by a call. */
export function errorText(e: unknown): string {
  if (e instanceof ApiError) {
    const wait = e.retryAfterS !== undefined ? ` Try again in ${Math.max(1, Math.ceil(e.retryAfterS))} s.` : "";
    return e.message + wait;
  }
  if (e instanceof DOMException && e.name === "AbortError") return "Stopped.";
  if (e instanceof TypeError) return "The server could not be reached. Check the connection and try again.";
  if (e instanceof Error) return e.message;
  return String(e);
}

let csrfToken: Promise<string> | null = null;

function getCsrf(): Promise<string> {
  csrfToken ??= fetch("/console/api/csrf", { credentials: "same-origin", headers: { accept: "application/json" } })
    .then(async (res) => {
      const body = await readBody(res);
      if (!res.ok) throw errorFromBody(res.status, body, res.headers.get("retry-after"));
      if (!isRecord(body) || typeof body.csrf_token !== "string") throw new Error("No CSRF token from the server.");
      return body.csrf_token;
    })
    .catch((e: unknown) => {
      csrfToken = null;
      throw e;
    });
  return csrfToken;
}

let unauthorized: (() => void) | null = null;

/** Called on any 401 from a console route (not the sign-in itself, not key-holder calls): back to sign-in. */
export function onUnauthorized(handler: (() => void) | null): void {
  unauthorized = handler;
}

async function send(path: string, opts: CallOptions, method: Method): Promise<Response> {
  const headers: Record<string, string> = { accept: "application/json" };
  const changing = method !== "GET";
  if (opts.bearer !== undefined) headers.authorization = `Bearer ${opts.bearer}`;
  else if (changing) headers["x-csrf-token"] = await getCsrf();
  const init: RequestInit = { method, headers, credentials: "same-origin", signal: opts.signal };
  if (changing) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(opts.body ?? {});
  }
  return fetch(path, init);
}

/** Calls a JSON route; throws ApiError for a non-2xx answer. */
export async function api<T>(path: string, opts: CallOptions = {}): Promise<T> {
  const method = opts.method ?? "GET";
  let res = await send(path, opts, method);
  let body = await readBody(res);
  let err = res.ok ? null : errorFromBody(res.status, body, res.headers.get("retry-after"));
  if (err?.isCsrf && opts.bearer === undefined) {
    csrfToken = null;
    res = await send(path, opts, method);
    body = await readBody(res);
    err = res.ok ? null : errorFromBody(res.status, body, res.headers.get("retry-after"));
  }
  if (err) {
    const isSignIn = path === "/console/api/session" && method === "POST";
    if (err.status === 401 && opts.bearer === undefined && !isSignIn) unauthorized?.();
    throw err;
  }
  return body as T;
}

/** Forgets the CSRF token (after signing in or out the server may issue a new one). */
export function resetCsrf(): void {
  csrfToken = null;
}
