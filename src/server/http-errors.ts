import { errors, type ErrorCode, type ErrorKind, type LucenaError } from "../core/errors.js";

/**
 * The one place an error becomes HTTP: its status, its headers and the body of docs/api.md ("Errors"),
 * `{"error":{"message","type","code"[,"param"]}}` with `code` the status, except the missing-key body, which is
 * `{"error":"Missing API Key"}` exactly.
 */
export type WireErrorType =
  | "invalid_request_error"
  | "gateway_auth_error"
  | "permission_error"
  | "conflict"
  | "not_found"
  | "rate_limit_error"
  | "server_error";

const BY_KIND: Record<ErrorKind, { status: number; type: WireErrorType }> = {
  invalid_request: { status: 400, type: "invalid_request_error" },
  auth: { status: 401, type: "gateway_auth_error" },
  forbidden: { status: 403, type: "permission_error" },
  conflict: { status: 409, type: "conflict" },
  not_found: { status: 404, type: "not_found" },
  rate_limited: { status: 429, type: "rate_limit_error" },
  unavailable: { status: 503, type: "server_error" },
  internal: { status: 500, type: "server_error" },
};

/**
 * Codes whose status is not their kind's. A bad Content-Type stays a 400, not HTTP's 415: the reference's table
 * has no 415, so it is a bad request (docs/api.md, "Errors").
 */
const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = { LUCENA_BODY_TOO_LARGE: 413 };

export interface HttpError {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/** `err` as an HTTP answer; `status` overrides its own (a transport-level 408 or 431, Fastify's own 4xx). */
export function httpError(err: LucenaError, status?: number): HttpError {
  const { type, status: byKind } = BY_KIND[err.kind];
  const code = status ?? STATUS_BY_CODE[err.code] ?? byKind;
  const headers: Record<string, string> = { ...err.limits };
  if (err.retryAfterS !== undefined) headers["retry-after"] = String(err.retryAfterS);
  if (err.code === "LUCENA_MISSING_KEY") return { status: code, headers, body: { error: "Missing API Key" } };
  const error: Record<string, unknown> = { message: err.message, type, code };
  if (type === "invalid_request_error") error.param = err.param;
  return { status: code, headers, body: { error } };
}

export const httpStatus = (err: LucenaError): number => httpError(err).status;

/** The body of a 4xx the transport answers itself, before any route (a request it could not read). */
export function unreadableRequestBody(message: string, status: number): unknown {
  return httpError(errors.invalidRequest(message), status).body;
}
