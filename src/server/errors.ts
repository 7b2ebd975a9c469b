/**
 * Every error the API returns, in one catalogue. Handlers throw these; only the error handler formats them.
 * Bodies follow decisions.md: `{"error":{"message","type","code"[,"param"]}}`, except the gateway's
 * missing-key body, which is `{"error":"Missing API Key"}` exactly.
 */
export type ErrorType =
  | "invalid_request_error"
  | "gateway_auth_error"
  | "not_found"
  | "rate_limit_error"
  | "server_error";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: ErrorType,
    message: string,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** The wire body. */
  body(): unknown {
    const error: Record<string, unknown> = { message: this.message, type: this.type, code: this.status };
    if (this.type === "invalid_request_error") error.param = this.param;
    return { error };
  }
}

/** The gateway's shape for a request without a bearer key. */
export class MissingKeyError extends ApiError {
  constructor() {
    super(401, "gateway_auth_error", "Missing API Key");
  }
  override body(): unknown {
    return { error: "Missing API Key" };
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

export const errors = {
  missingKey: () => new MissingKeyError(),
  invalidKey: () => new ApiError(401, "gateway_auth_error", "Invalid API Key"),
  /** The key was revoked, or expired, while its request was being answered. */
  keyRevoked: () => new ApiError(401, "gateway_auth_error", "The API key was revoked or has expired; the answer is incomplete."),
  invalidRequest: (message: string, param: string | null = null) => new ApiError(400, "invalid_request_error", message, param),
  bodyTooLarge: (limit: number) =>
    new ApiError(413, "invalid_request_error", `Request body is larger than the limit of ${limit} bytes.`),
  // A 400, not HTTP's 415: the reference's table has no 415, and decisions.md makes a bad Content-Type a bad request.
  unsupportedMediaType: (type: string) =>
    new ApiError(400, "invalid_request_error", `Unsupported Content-Type '${echo(type)}': send application/json.`),
  missingMediaType: () =>
    new ApiError(400, "invalid_request_error", "The request has a body but no Content-Type: send Content-Type: application/json."),
  routeNotFound: () => new ApiError(404, "not_found", "Not found."),
  modelNotFound: (id: string, available: string[]) =>
    new ApiError(
      404,
      "not_found",
      `The model '${echo(id)}' does not exist. Available models: ${available.map((m) => `'${m}'`).join(", ") || "none"}.`,
    ),
  modelLoading: (id: string, retryAfter: number) =>
    new ApiError(503, "server_error", `The model '${id}' is loading. Retry shortly.`, null, { "retry-after": String(retryAfter) }),
  modelUnavailable: (id: string, retryAfter: number) =>
    new ApiError(503, "server_error", `The model '${id}' is temporarily unavailable.`, null, { "retry-after": String(retryAfter) }),
  queueFull: (id: string, retryAfter: number) =>
    new ApiError(503, "server_error", `The model '${id}' is busy: too many requests are waiting. Retry shortly.`, null, {
      "retry-after": String(retryAfter),
    }),
  shuttingDown: () => new ApiError(503, "server_error", "The server is shutting down.", null, { "retry-after": "5" }),
  internal: () => new ApiError(500, "server_error", "Inference failed due to an internal error."),
  /** An upstream replica refused the request itself (a 4xx): another replica would say the same. */
  upstreamRefused: (status: number) => new ApiError(400, "invalid_request_error", `The model's server refused the request (status ${status}).`),
  /** An upstream replica failed after the answer began: the stream ends with this error event. */
  upstreamFailed: () => new ApiError(500, "server_error", "The model's server failed while answering; the answer is incomplete."),
};
