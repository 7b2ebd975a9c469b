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

/**
 * Failed sign-ins per client address: after `maxFailures` within `windowMs`, the address is locked out for
 * `lockMs`, the right token included (a guesser learns nothing more while locked). A success clears the count.
 */
export class SignInGuard {
  private readonly failures = new Map<string, { count: number; first: number; lockedUntil: number }>();

  constructor(
    private readonly opts: { maxFailures: number; windowMs: number; lockMs: number } = {
      maxFailures: 5,
      windowMs: 15 * 60_000,
      lockMs: 15 * 60_000,
    },
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds until the address may try again; 0 when it may now. */
  lockedFor(address: string): number {
    const f = this.failures.get(address);
    const left = f ? f.lockedUntil - this.now() : 0;
    return left > 0 ? Math.ceil(left / 1000) : 0;
  }

  /** Counts a failure; returns the failures so far in the window. */
  fail(address: string): number {
    const now = this.now();
    if (this.failures.size > 10_000) this.prune(now);
    let f = this.failures.get(address);
    if (!f || now - f.first > this.opts.windowMs) {
      f = { count: 0, first: now, lockedUntil: 0 };
      this.failures.set(address, f);
    }
    f.count++;
    if (f.count >= this.opts.maxFailures) f.lockedUntil = now + this.opts.lockMs;
    return f.count;
  }

  succeed(address: string): void {
    this.failures.delete(address);
  }

  private prune(now: number): void {
    for (const [address, f] of this.failures) {
      if (f.lockedUntil <= now && now - f.first > this.opts.windowMs) this.failures.delete(address);
    }
  }
}
