import { errors } from "../core/errors.js";
import type { KeyVerifier, Principal } from "../core/principal.js";

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

/** The token of an `Authorization: Bearer <token>` header, or null when there is none. */
export function bearerToken(header: string | undefined): string | null {
  return header === undefined ? null : (BEARER.exec(header)?.[1] ?? null);
}

/**
 * A header that presents no credential at all: empty or blank, or the Bearer scheme with no token (what a client
 * sends when the variable holding its key is unset). It gets the same answer as no header.
 */
const NO_CREDENTIAL = /^[ \t]*(Bearer)?[ \t]*$/i;

/**
 * The key of an `Authorization: Bearer` header; throws the 401 bodies of docs/api.md ("Authentication"): no credential (no header,
 * a blank one, `Bearer` alone) is the missing key; any other header that is not `Bearer <token>` (`Basic …`, a
 * bare key, `Bearer <key> extra`) is an invalid key, since it presents something that is not a key of ours.
 */
export function authenticate(header: string | undefined, verifier: KeyVerifier): Principal {
  if (header === undefined || NO_CREDENTIAL.test(header)) throw errors.missingKey();
  const key = bearerToken(header);
  if (key === null) throw errors.invalidKey();
  const principal = verifier.verify(key);
  if (!principal) throw errors.invalidKey();
  return principal;
}
