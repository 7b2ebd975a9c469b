/**
 * Every error the server can answer with, in one catalogue, each with a stable code (as fastify's `FST_ERR_*` and
 * undici's `UND_ERR_*`): logs, metrics and tests name an error by its code, never by its message. Any layer throws
 * these; only the HTTP layer (server/http-errors.ts) turns one into a status and a body. Nothing here knows HTTP.
 */

/** What kind of failure an error is: the HTTP layer maps each kind (and a few codes) to a status. */
export type ErrorKind =
  /** The request itself is wrong: sending it again unchanged fails again. */
  | "invalid_request"
  /** No usable credential. */
  | "auth"
  /** What the request names does not exist. */
  | "not_found"
  /** The credential is good but this is not allowed (a form from another site, requests closed). */
  | "forbidden"
  /** The thing named is not in a state that allows this (a request already decided, a key already shown). */
  | "conflict"
  /** The key is over one of its limits for now. */
  | "rate_limited"
  /** The server cannot take it now (loading, busy, shutting down): retry later. */
  | "unavailable"
  /** The server failed. */
  | "internal";

/** The catalogue: each code and its kind. */
export const ERROR_KINDS = {
  LUCENA_MISSING_KEY: "auth",
  LUCENA_INVALID_KEY: "auth",
  LUCENA_KEY_REVOKED: "auth",
  LUCENA_INVALID_ADMIN_TOKEN: "auth",
  LUCENA_INVALID_REQUEST: "invalid_request",
  LUCENA_BODY_TOO_LARGE: "invalid_request",
  LUCENA_UNSUPPORTED_MEDIA_TYPE: "invalid_request",
  LUCENA_MISSING_MEDIA_TYPE: "invalid_request",
  LUCENA_UPSTREAM_REFUSED: "invalid_request",
  LUCENA_ROUTE_NOT_FOUND: "not_found",
  LUCENA_MODEL_NOT_FOUND: "not_found",
  LUCENA_KEY_NOT_FOUND: "not_found",
  LUCENA_CONSOLE_SIGN_IN: "auth",
  LUCENA_CSRF: "forbidden",
  LUCENA_ACCESS_REQUESTS_CLOSED: "forbidden",
  LUCENA_ACCESS_REQUEST_NOT_FOUND: "not_found",
  LUCENA_ACCESS_REQUEST_DECIDED: "conflict",
  LUCENA_KEY_NOT_READY: "conflict",
  LUCENA_KEY_ALREADY_SHOWN: "conflict",
  LUCENA_RATE_LIMITED: "rate_limited",
  LUCENA_SIGN_IN_LOCKED: "rate_limited",
  LUCENA_TOO_MANY_ACCESS_REQUESTS: "rate_limited",
  LUCENA_MODEL_LOADING: "unavailable",
  LUCENA_MODEL_UNAVAILABLE: "unavailable",
  LUCENA_QUEUE_FULL: "unavailable",
  LUCENA_SHUTTING_DOWN: "unavailable",
  LUCENA_INTERNAL: "internal",
  LUCENA_UPSTREAM_FAILED: "internal",
} as const satisfies Record<string, ErrorKind>;

export type ErrorCode = keyof typeof ERROR_KINDS;

export interface ErrorDetails {
  /** The request field at fault (invalid requests). */
  param?: string | null;
  /** When to try again, in seconds (unavailable, rate limited). */
  retryAfterS?: number;
  /** The key's limits and what is left of them (`x-ratelimit-*` names and values), with a rate limit. */
  limits?: Readonly<Record<string, string>>;
}

export class LucenaError extends Error {
  readonly param: string | null;
  readonly retryAfterS: number | undefined;
  readonly limits: Readonly<Record<string, string>>;

  constructor(
    readonly code: ErrorCode,
    message: string,
    details: ErrorDetails = {},
  ) {
    super(message);
    this.name = "LucenaError";
    this.param = details.param ?? null;
    this.retryAfterS = details.retryAfterS;
    this.limits = details.limits ?? {};
  }

  get kind(): ErrorKind {
    return ERROR_KINDS[this.code];
  }

  /** The client's own doing (the request, its key, its limits), as opposed to the server's state or a failure. */
  get clientError(): boolean {
    return this.kind !== "unavailable" && this.kind !== "internal";
  }
}

/** The most characters of a client's string (a model id, a shape name, a content type) an error message repeats. */
export const ECHO_LIMIT = 64;

/**
 * A client's string as an error message repeats it: cut to {@link ECHO_LIMIT} characters, with "…" when cut, so
 * that an answer never grows with what the client sent (a 1 MB model id would otherwise come back whole). A
 * cut never leaves half of a surrogate pair.
 */
export function echo(value: string): string {
  if (value.length <= ECHO_LIMIT) return value;
  const last = value.charCodeAt(ECHO_LIMIT - 1);
  const end = last >= 0xd800 && last <= 0xdbff ? ECHO_LIMIT - 1 : ECHO_LIMIT;
  return `${value.slice(0, end)}…`;
}

const error = (code: ErrorCode, message: string, details?: ErrorDetails) => new LucenaError(code, message, details);

export const errors = {
  missingKey: () => error("LUCENA_MISSING_KEY", "Missing API Key"),
  invalidKey: () => error("LUCENA_INVALID_KEY", "Invalid API Key"),
  /** The key was revoked, or expired, while its request was being answered. */
  keyRevoked: () => error("LUCENA_KEY_REVOKED", "The API key was revoked or has expired; the answer is incomplete."),
  invalidAdminToken: () => error("LUCENA_INVALID_ADMIN_TOKEN", "Invalid admin token"),
  invalidRequest: (message: string, param: string | null = null) => error("LUCENA_INVALID_REQUEST", message, { param }),
  bodyTooLarge: (limit: number) =>
    error("LUCENA_BODY_TOO_LARGE", `Request body is larger than the limit of ${limit} bytes.`),
  unsupportedMediaType: (type: string) =>
    error("LUCENA_UNSUPPORTED_MEDIA_TYPE", `Unsupported Content-Type '${echo(type)}': send application/json.`),
  missingMediaType: () =>
    error(
      "LUCENA_MISSING_MEDIA_TYPE",
      "The request has a body but no Content-Type: send Content-Type: application/json.",
    ),
  routeNotFound: () => error("LUCENA_ROUTE_NOT_FOUND", "Not found."),
  modelNotFound: (id: string, available: string[]) =>
    error(
      "LUCENA_MODEL_NOT_FOUND",
      `The model '${echo(id)}' does not exist. Available models: ${available.map((m) => `'${m}'`).join(", ") || "none"}.`,
    ),
  consoleSignIn: () => error("LUCENA_CONSOLE_SIGN_IN", "Sign in to the console with the admin token."),
  csrf: () =>
    error(
      "LUCENA_CSRF",
      "The form's security token is missing or stale, or it came from another site: reload the page.",
    ),
  accessRequestsClosed: () =>
    error("LUCENA_ACCESS_REQUESTS_CLOSED", "This server does not take access requests now: ask its operator."),
  accessRequestNotFound: () => error("LUCENA_ACCESS_REQUEST_NOT_FOUND", "No such access request."),
  accessRequestDecided: (status: string) =>
    error("LUCENA_ACCESS_REQUEST_DECIDED", `The access request was already decided (${status}).`),
  keyNotReady: (status: string) =>
    error("LUCENA_KEY_NOT_READY", `The access request is ${status}: there is no key to show.`),
  keyAlreadyShown: () => error("LUCENA_KEY_ALREADY_SHOWN", "The key was already shown once and cannot be shown again."),
  signInLocked: (retryAfterS: number) =>
    error("LUCENA_SIGN_IN_LOCKED", "Too many failed sign-in attempts from this address: try again later.", {
      retryAfterS,
    }),
  tooManyAccessRequests: (retryAfterS: number) =>
    error("LUCENA_TOO_MANY_ACCESS_REQUESTS", "Too many access requests from this address: try again later.", {
      retryAfterS,
    }),
  keyNotFound: (id: string) => error("LUCENA_KEY_NOT_FOUND", `No key with id '${echo(id)}'.`),
  rateLimited: (message: string, retryAfterS: number, limits: Record<string, string>) =>
    error("LUCENA_RATE_LIMITED", message, { retryAfterS, limits }),
  modelLoading: (id: string, retryAfterS: number) =>
    error("LUCENA_MODEL_LOADING", `The model '${id}' is loading. Retry shortly.`, { retryAfterS }),
  modelUnavailable: (id: string, retryAfterS: number) =>
    error("LUCENA_MODEL_UNAVAILABLE", `The model '${id}' is temporarily unavailable.`, { retryAfterS }),
  queueFull: (id: string, retryAfterS: number) =>
    error("LUCENA_QUEUE_FULL", `The model '${id}' is busy: too many requests are waiting. Retry shortly.`, {
      retryAfterS,
    }),
  shuttingDown: () => error("LUCENA_SHUTTING_DOWN", "The server is shutting down.", { retryAfterS: 5 }),
  internal: () => error("LUCENA_INTERNAL", "Inference failed due to an internal error."),
  /** An upstream replica refused the request itself (a 4xx): another replica would say the same. */
  upstreamRefused: (status: number) =>
    error("LUCENA_UPSTREAM_REFUSED", `The model's server refused the request (status ${status}).`),
  /** An upstream replica failed after the answer began: the stream ends with this error event. */
  upstreamFailed: () =>
    error("LUCENA_UPSTREAM_FAILED", "The model's server failed while answering; the answer is incomplete."),
};
