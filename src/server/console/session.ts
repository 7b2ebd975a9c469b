import { secretBase62, sha256Hex } from "../../core/ids.js";

/** How long a console session lasts from sign-in. */
export const SESSION_TTL_MS = 12 * 3_600_000;
const MAX_SESSIONS = 1000;

/**
 * The operators' console sessions, in memory: a sign-in gives a random 256-bit id (sent as an HttpOnly cookie),
 * kept here only as its SHA-256 hash. A restart signs every operator out; each server process has its own.
 */
export class ConsoleSessions {
  /** Hash → expiry (epoch ms), oldest first. */
  private readonly sessions = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  create(): string {
    const id = secretBase62(43);
    const now = this.now();
    for (const [hash, expires] of this.sessions) if (expires <= now) this.sessions.delete(hash);
    // The oldest go first when a flood of sign-ins would grow the map without bound.
    while (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    this.sessions.set(sha256Hex(id), now + SESSION_TTL_MS);
    return id;
  }

  valid(id: string | undefined): boolean {
    if (!id) return false;
    const hash = sha256Hex(id);
    const expires = this.sessions.get(hash);
    if (expires === undefined) return false;
    if (expires > this.now()) return true;
    this.sessions.delete(hash);
    return false;
  }

  end(id: string | undefined): void {
    if (id) this.sessions.delete(sha256Hex(id));
  }
}
