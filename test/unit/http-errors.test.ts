import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ERROR_KINDS, errors, LucenaError, type ErrorCode } from "../../src/core/errors.js";
import { httpError } from "../../src/server/http-errors.js";

describe("the error catalogue and its HTTP mapping", () => {
  test("every factory makes an error of the catalogue, with a stable LUCENA_ code", () => {
    const made: LucenaError[] = [
      errors.missingKey(),
      errors.invalidKey(),
      errors.keyRevoked(),
      errors.invalidAdminToken(),
      errors.invalidRequest("x", "p"),
      errors.bodyTooLarge(10),
      errors.unsupportedMediaType("text/plain"),
      errors.missingMediaType(),
      errors.routeNotFound(),
      errors.modelNotFound("m", ["a"]),
      errors.keyNotFound("k"),
      errors.rateLimited("slow down", 3, {}),
      errors.modelLoading("m", 5),
      errors.modelUnavailable("m", 5),
      errors.queueFull("m", 1),
      errors.shuttingDown(),
      errors.internal(),
      errors.upstreamRefused(422),
      errors.upstreamFailed(),
      errors.consoleSignIn(),
      errors.csrf(),
      errors.accessRequestsClosed(),
      errors.accessRequestNotFound(),
      errors.accessRequestDecided("approved"),
      errors.keyNotReady("pending"),
      errors.keyAlreadyShown(),
      errors.signInLocked(60),
      errors.tooManyAccessRequests(60),
    ];
    assert.deepEqual(
      new Set(made.map((e) => e.code)),
      new Set(Object.keys(ERROR_KINDS)),
      "one factory per code, every code made",
    );
    for (const e of made) assert.match(e.code, /^LUCENA_[A-Z_]+$/);
  });

  test("each kind has its status and wire type; the body is the reference's", () => {
    const cases: Array<[LucenaError, number, string]> = [
      [errors.invalidRequest("Bad temperature.", "temperature"), 400, "invalid_request_error"],
      [errors.invalidKey(), 401, "gateway_auth_error"],
      [errors.modelNotFound("m", []), 404, "not_found"],
      [errors.rateLimited("Rate limit reached.", 7, {}), 429, "rate_limit_error"],
      [errors.queueFull("m", 1), 503, "server_error"],
      [errors.internal(), 500, "server_error"],
      [errors.bodyTooLarge(1024), 413, "invalid_request_error"],
      [errors.csrf(), 403, "permission_error"],
      [errors.keyAlreadyShown(), 409, "conflict"],
    ];
    for (const [err, status, type] of cases) {
      const http = httpError(err);
      assert.equal(http.status, status, err.code);
      const error = {
        message: err.message,
        type,
        code: status,
        ...(type === "invalid_request_error" ? { param: err.param } : {}),
      };
      assert.deepEqual(http.body, { error }, err.code);
    }
    assert.deepEqual(httpError(errors.invalidRequest("Bad.", "temperature")).body, {
      error: { message: "Bad.", type: "invalid_request_error", code: 400, param: "temperature" },
    });
  });

  test("the missing key has the gateway's exact body", () => {
    assert.deepEqual(httpError(errors.missingKey()), { status: 401, headers: {}, body: { error: "Missing API Key" } });
  });

  test("retry advice and a key's limits become headers", () => {
    const limits = { "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0" };
    assert.deepEqual(httpError(errors.rateLimited("Rate limit reached.", 42, limits)).headers, {
      ...limits,
      "retry-after": "42",
    });
    assert.deepEqual(httpError(errors.modelLoading("m", 5)).headers, { "retry-after": "5" });
    assert.deepEqual(httpError(errors.internal()).headers, {});
  });

  test("a transport status overrides the kind's (a 408 or 431 the server answers itself)", () => {
    const http = httpError(errors.invalidRequest("The request was not received in time."), 408);
    assert.equal(http.status, 408);
    assert.equal((http.body as { error: { code: number } }).error.code, 408);
  });

  test("client errors are told from the server's state and failures, for retry decisions", () => {
    const client: ErrorCode[] = [
      "LUCENA_INVALID_REQUEST",
      "LUCENA_UPSTREAM_REFUSED",
      "LUCENA_RATE_LIMITED",
      "LUCENA_INVALID_KEY",
    ];
    const server: ErrorCode[] = [
      "LUCENA_QUEUE_FULL",
      "LUCENA_MODEL_UNAVAILABLE",
      "LUCENA_INTERNAL",
      "LUCENA_UPSTREAM_FAILED",
    ];
    for (const code of client) assert.equal(new LucenaError(code, "x").clientError, true, code);
    for (const code of server) assert.equal(new LucenaError(code, "x").clientError, false, code);
  });
});
