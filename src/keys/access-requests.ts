import type Database from "better-sqlite3";
import { errors } from "../core/errors.js";
import { base62, secretBase62, sha256Hex } from "../core/ids.js";
import type { KeyInfo, KeyStore, NewKey } from "./store.js";

/**
 * `pending`: waiting for the operator. `approved`: the operator set the key's limits; the key is made when the
 * visitor reveals it on their link. `issued`: the key was made and shown, once. `rejected`: no key.
 */
export type AccessStatus = "pending" | "approved" | "issued" | "rejected";

/** The most characters of each field a visitor sends (the form's limits; the HTTP layer refuses longer). */
export const ACCESS_FIELD_LIMITS = { name: 100, contact: 200, purpose: 2000 } as const;

/** Pending requests kept at most: beyond, new requests are refused until the operator decides some. */
export const MAX_PENDING = 1000;
/** Decided requests listed at most (the newest). */
const DECIDED_LISTED = 500;

const HOUR_MS = 3_600_000;
/** 43 base62 characters: 256 bits, as keys have. */
const TOKEN_CHARS = 43;

export interface AccessRequest {
  id: string;
  name: string;
  contact: string;
  purpose: string;
  /** The client address it came from (for the operator; the per-address limit counts by it). */
  address: string;
  status: AccessStatus;
  createdAt: number;
  decidedAt: number | null;
  /** The limits the operator approved it with (null until approved). */
  limits: {
    rpm: number | null;
    tpm: number | null;
    concurrency: number | null;
    models: string[] | null;
    expiresAt: number | null;
  } | null;
  keyId: string | null;
}

interface Row {
  id: string;
  name: string;
  contact: string;
  purpose: string;
  address: string;
  status: AccessStatus;
  created_at: number;
  decided_at: number | null;
  rpm: number | null;
  tpm: number | null;
  concurrency: number | null;
  models: string | null;
  expires_at: number | null;
  key_id: string | null;
}

function toRequest(r: Row): AccessRequest {
  const decided = r.status === "approved" || r.status === "issued";
  return {
    id: r.id,
    name: r.name,
    contact: r.contact,
    purpose: r.purpose,
    address: r.address,
    status: r.status,
    createdAt: r.created_at,
    decidedAt: r.decided_at,
    limits: decided
      ? {
          rpm: r.rpm,
          tpm: r.tpm,
          concurrency: r.concurrency,
          models: r.models === null ? null : (JSON.parse(r.models) as string[]),
          expiresAt: r.expires_at,
        }
      : null,
    keyId: r.key_id,
  };
}

/**
 * Visitors' requests for a key, in the key store's SQLite file. A request is found by its link's token, kept
 * only as a SHA-256 hash; the key itself is made only when its visitor reveals it, so that no usable key is
 * ever stored, even for a moment, and a link opened by a previewer cannot use it up (revealing is a POST).
 */
export class AccessRequests {
  private readonly db: Database.Database;
  private readonly stmts;

  constructor(private readonly keys: KeyStore) {
    this.db = keys.database;
    this.stmts = {
      insert: this.db.prepare(
        `INSERT INTO access_requests (id, token_hash, name, contact, purpose, address, created_at)
         VALUES (@id, @tokenHash, @name, @contact, @purpose, @address, @createdAt)`,
      ),
      fromAddress: this.db.prepare<[string, number], { n: number; oldest: number | null }>(
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM access_requests WHERE address = ? AND created_at > ?",
      ),
      pending: this.db.prepare("SELECT COUNT(*) FROM access_requests WHERE status = 'pending'").pluck(),
      byToken: this.db.prepare<[string], Row>("SELECT * FROM access_requests WHERE token_hash = ?"),
      byId: this.db.prepare<[string], Row>("SELECT * FROM access_requests WHERE id = ?"),
      // Pending ones are bounded by MAX_PENDING and always all listed; decided ones, the latest DECIDED_LISTED.
      pendingList: this.db.prepare<[], Row>(
        "SELECT * FROM access_requests WHERE status = 'pending' ORDER BY created_at DESC, id",
      ),
      decidedList: this.db.prepare<[string, string], Row>(
        `SELECT * FROM access_requests WHERE status != 'pending' AND (status = ? OR ? = 'all')
         ORDER BY created_at DESC, id LIMIT ${DECIDED_LISTED}`,
      ),
      approve: this.db.prepare(
        `UPDATE access_requests SET status = 'approved', decided_at = @decidedAt, rpm = @rpm, tpm = @tpm,
                concurrency = @concurrency, models = @models, expires_at = @expiresAt
         WHERE id = @id AND status = 'pending'`,
      ),
      // An approval may be withdrawn until its key is revealed.
      reject: this.db.prepare(
        "UPDATE access_requests SET status = 'rejected', decided_at = ? WHERE id = ? AND status IN ('pending', 'approved')",
      ),
      issue: this.db.prepare("UPDATE access_requests SET status = 'issued', key_id = ? WHERE id = ?"),
    };
  }

  /**
   * Stores a pending request and returns its link's token (given here once). Throws a 429 when the address has
   * made `perHour` requests in the last hour, or when {@link MAX_PENDING} wait already.
   */
  submit(
    r: { name: string; contact: string; purpose: string; address: string },
    perHour: number,
  ): { id: string; token: string } {
    const token = secretBase62(TOKEN_CHARS);
    const id = `req_${base62(16)}`;
    const now = Date.now();
    this.db
      .transaction(() => {
        const recent = this.stmts.fromAddress.get(r.address, now - HOUR_MS)!;
        if (recent.n >= perHour) {
          throw errors.tooManyAccessRequests(Math.max(1, Math.ceil(((recent.oldest ?? now) + HOUR_MS - now) / 1000)));
        }
        if ((this.stmts.pending.get() as number) >= MAX_PENDING) throw errors.tooManyAccessRequests(3600);
        this.stmts.insert.run({ id, tokenHash: sha256Hex(token), ...r, createdAt: now });
      })
      .immediate();
    return { id, token };
  }

  /** The request a link's token names, or null. */
  byToken(token: string): AccessRequest | null {
    const row = this.stmts.byToken.get(sha256Hex(token));
    return row ? toRequest(row) : null;
  }

  /** Newest first: those of one status, or all of them; every pending one, and the latest decided ones. */
  list(status: AccessStatus | "all"): AccessRequest[] {
    const pending = status === "pending" || status === "all" ? this.stmts.pendingList.all() : [];
    const decided = status === "pending" ? [] : this.stmts.decidedList.all(status, status);
    const rows = [...pending, ...decided].sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? -1 : 1));
    return rows.map(toRequest);
  }

  /** Approves a pending request with the key's limits (the key's name is the visitor's). */
  approve(id: string, limits: Omit<NewKey, "name" | "expiresAt">): AccessRequest {
    const now = Date.now();
    return this.decide(id, () =>
      this.stmts.approve.run({
        id,
        decidedAt: now,
        rpm: limits.rpm ?? null,
        tpm: limits.tpm ?? null,
        concurrency: limits.concurrency ?? null,
        models: limits.models == null ? null : JSON.stringify(limits.models),
        expiresAt: limits.expiresInMs == null ? null : now + limits.expiresInMs,
      }),
    );
  }

  /** Rejects a request still pending, or withdraws an approval whose key was not revealed yet. */
  reject(id: string): AccessRequest {
    return this.decide(id, () => this.stmts.reject.run(Date.now(), id));
  }

  /**
   * Makes the key of an approved request and returns it: once. Later calls throw "already shown"; a request still
   * pending or rejected has none. One transaction: two reveals at once give one key.
   */
  reveal(token: string): { key: string; info: KeyInfo } {
    return this.db
      .transaction(() => {
        const row = this.stmts.byToken.get(sha256Hex(token));
        if (!row) throw errors.accessRequestNotFound();
        if (row.status === "issued") throw errors.keyAlreadyShown();
        if (row.status !== "approved") throw errors.keyNotReady(row.status);
        // A key born expired would only confuse: the visitor asks again.
        if (row.expires_at !== null && row.expires_at <= Date.now()) throw errors.keyNotReady("expired");
        const made = this.keys.create({
          name: row.name,
          rpm: row.rpm,
          tpm: row.tpm,
          concurrency: row.concurrency,
          models: row.models === null ? null : (JSON.parse(row.models) as string[]),
          expiresAt: row.expires_at,
        });
        this.stmts.issue.run(made.info.id, row.id);
        return made;
      })
      .immediate();
  }

  private decide(id: string, update: () => Database.RunResult): AccessRequest {
    return this.db
      .transaction(() => {
        const row = this.stmts.byId.get(id);
        if (!row) throw errors.accessRequestNotFound();
        if (update().changes === 0) throw errors.accessRequestDecided(row.status);
        return toRequest(this.stmts.byId.get(id)!);
      })
      .immediate();
  }
}
