import { LucenaError } from "../../src/core/errors.js";
import { httpError } from "../../src/server/http-errors.js";

/** A domain error as the HTTP layer answers it: status, the body's type, and the headers. */
export function asHttp(err: unknown): { status: number; type: string; headers: Record<string, string> } {
  if (!(err instanceof LucenaError))
    throw new Error(
      `expected a LucenaError, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`,
    );
  const { status, headers, body } = httpError(err);
  return { status, headers, type: (body as { error: { type: string } }).error.type };
}
