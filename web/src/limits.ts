// Reading the limit inputs (rpm, tpm, concurrency, models, expires) of the approve, create and edit forms.

export interface LimitFields {
  rpm: string;
  tpm: string;
  concurrency: string;
  models: string;
  expires: string;
}

export const emptyLimits: LimitFields = { rpm: "", tpm: "", concurrency: "", models: "", expires: "" };

export class FieldError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

function int(field: string, value: string): number | null {
  const v = value.trim();
  if (!v) return null;
  if (!/^\d+$/.test(v) || Number(v) < 1 || !Number.isSafeInteger(Number(v))) {
    throw new FieldError(field, `${field}: enter a whole number of at least 1, or leave it empty for no limit.`);
  }
  return Number(v);
}

function models(value: string): string[] | null {
  const ids = value
    .split(",")
    .map((m) => m.trim())
    .filter(Boolean);
  return ids.length ? ids : null;
}

/**
 * The JSON body for the limits. `clear`: empty fields are sent as null (PATCH: clears the limit); otherwise they are
 * left out (approve, create: absent means unlimited / all models). `withExpires`: include the expires duration.
 */
export function limitsBody(f: LimitFields, clear: boolean, withExpires: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  const put = (k: string, v: unknown) => {
    if (v !== null || clear) body[k] = v;
  };
  put("rpm", int("rpm", f.rpm));
  put("tpm", int("tpm", f.tpm));
  put("concurrency", int("concurrency", f.concurrency));
  put("models", models(f.models));
  if (withExpires && f.expires.trim()) {
    body.expires = f.expires.trim();
  }
  return body;
}
