import { createHash, timingSafeEqual } from "node:crypto";
import { isIPv6 } from "node:net";
import { errors } from "../core/errors.js";

/**
 * What per-address limits count a client by: its IPv4 address (an IPv4-mapped IPv6 one as IPv4), or the /64 of
 * an IPv6 one, since one subscriber usually holds a whole /64 and could otherwise step through it.
 */
export function addressKey(ip: string): string {
  const address = ip.split("%")[0]!;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head = "", tail = ""] = address.split("::");
  const front = head === "" ? [] : head.split(":");
  const back = tail === "" ? [] : tail.split(":");
  const groups = address.includes("::")
    ? [...front, ...Array<string>(8 - front.length - back.length).fill("0"), ...back]
    : front;
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(":")}::/64`;
}

/** Addresses followed at most; beyond, expired entries go, then the oldest (a flood from many addresses). */
const MAX_TRACKED = 10_000;

/**
 * Failed admin-token presentations per client address (addressKey: an IPv6 client counts by its /64), shared by
 * the console's sign-in and the admin API: after `maxFailures` within `windowMs`, the address is locked out of
 * both for `lockMs`, the right token included (a guesser learns nothing more while locked). A success clears
 * the count.
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
    if (this.failures.size >= MAX_TRACKED) this.prune(now);
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

  /** Drops what has expired; when that is not enough, the oldest tenth, so that a flood costs no scan per failure. */
  private prune(now: number): void {
    for (const [address, f] of this.failures) {
      if (f.lockedUntil <= now && now - f.first > this.opts.windowMs) this.failures.delete(address);
    }
    for (const address of this.failures.keys()) {
      if (this.failures.size < MAX_TRACKED * 0.9) break;
      this.failures.delete(address);
    }
  }
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/** What one presentation of the admin token came to. */
export interface AdminTokenAttempt {
  ok: boolean;
  /** The client's address as the guard counts it (addressKey). */
  address: string;
  /** Failures from this address in the guard's window, this one included (0 when ok). */
  failures: number;
}

/**
 * The one check of a presented admin token, for the admin API and the console's sign-in: compared in constant
 * time (both sides hashed, so lengths do not show), failures counted per address in `guard`. A locked-out address
 * gets the 429 whatever it presents. `token` null: no admin token is configured, and nothing matches.
 */
export function adminTokenCheck(
  token: string | null,
  guard: SignInGuard,
): (presented: string, ip: string) => AdminTokenAttempt {
  const expected = token === null ? null : digest(token);
  return (presented, ip) => {
    const address = addressKey(ip);
    const lockedFor = guard.lockedFor(address);
    if (lockedFor > 0) throw errors.signInLocked(lockedFor);
    if (expected !== null && timingSafeEqual(digest(presented), expected)) {
      guard.succeed(address);
      return { ok: true, address, failures: 0 };
    }
    return { ok: false, address, failures: guard.fail(address) };
  };
}
