/** Who a request is from, and what it may do; never the key itself. */
export interface Principal {
  keyId: string;
  /** Per-key limits; null fields are unlimited. */
  limits: { rpm: number | null; tpm: number | null; concurrency: number | null };
  /** The models this key may use; null: all. */
  models: readonly string[] | null;
}

/**
 * Checks a presented key. Implementations compare SHA-256 hashes through a map lookup, so the time taken
 * does not depend on how much of a key matched.
 */
export interface KeyVerifier {
  /** `hash` is the key's SHA-256, when the caller has it already (a chain hashes once for all its verifiers). */
  verify(presentedKey: string, hash?: string): Principal | null;
  /**
   * Whether a key this verifier admitted may still be used (not revoked, not expired); undefined for a key id that
   * is not its own. Absent: its keys stay usable for as long as the process runs.
   */
  stillUsable?(keyId: string): boolean | undefined;
}
