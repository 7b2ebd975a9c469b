import { join } from "node:path";
import Database from "better-sqlite3";
import { base62, secretBase62 } from "../core/ids.js";
import { sha256Hex } from "../core/ids.js";
import type { KeyVerifier, Principal } from "../core/principal.js";
import { privateDataDir, privateFile } from "./data-dir.js";
import { CLIENT_CLOSED_STATUS } from "./ledger.js";

export const KEY_PREFIX = "sk-lucena-";
/** 43 base62 characters carry 256 bits: 32 random bytes. */
const KEY_RANDOM_CHARS = 43;
const DISPLAY_CHARS = 4;

export interface KeyLimits {
  rpm: number | null;
  tpm: number | null;
  concurrency: number | null;
}

export interface KeyInfo extends KeyLimits {
  id: string;
  name: string;
  /** `sk-lucena-` and the first characters: enough to recognise a key, useless to use it. */
  prefix: string;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
  /** The models this key may use; null: all. */
  models: string[] | null;
}

export interface NewKey {
  name: string;
  rpm?: number | null;
  tpm?: number | null;
  concurrency?: number | null;
  /** Milliseconds from now. */
  expiresInMs?: number | null;
  /** An absolute expiry (epoch ms), instead of expiresInMs: a key issued later on limits decided earlier. */
  expiresAt?: number | null;
  models?: string[] | null;
}

interface KeyRow {
  id: string;
  name: string;
  prefix: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  rpm: number | null;
  tpm: number | null;
  concurrency: number | null;
  models: string | null;
}

/**
 * Where a usage row stands. `in_progress`: written when the request reached its model and brought up to date
 * as it runs; a row that stays so after its server stopped is from a process that died (SIGKILL, crash, power
 * loss) while the request ran. `complete`: the request ended (answered, failed, or ended by a shutdown).
 * `client_closed`: the client went away before its answer was complete (status 499).
 */
export type UsageState = "in_progress" | "complete" | "client_closed";

export interface UsageRow {
  requestId: string;
  keyId: string | null;
  model: string;
  promptTokens: number;
  completionTokens: number;
  /** The HTTP status; 499 for client_closed; 0 while a JSON request has not answered yet. */
  status: number;
  /** Default `complete`. */
  state?: UsageState;
  finishReason: string | null;
  ttftMs: number | null;
  durationMs: number;
  stream: boolean;
}

export interface UsageSummary {
  keyId: string | null;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Rows among `requests` still in progress (or left so by a process that died): their usage is counted. */
  inProgress: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS keys (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL,
  hash        TEXT NOT NULL UNIQUE,
  prefix      TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER,
  revoked_at  INTEGER,
  rpm         INTEGER,
  tpm         INTEGER,
  concurrency INTEGER,
  models      TEXT
);
CREATE TABLE IF NOT EXISTS usage (
  id                INTEGER PRIMARY KEY,
  request_id        TEXT NOT NULL,
  key_id            TEXT,
  model             TEXT NOT NULL,
  prompt_tokens     INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  status            INTEGER NOT NULL,
  finish_reason     TEXT,
  ttft_ms           REAL,
  duration_ms       REAL NOT NULL,
  stream            INTEGER NOT NULL,
  created_at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_key ON usage (key_id, created_at);
`;

/**
 * Schema changes since the first release, applied in order; `PRAGMA user_version` counts those applied. Each
 * keeps the database usable by older servers still running on it (columns are added with defaults, never
 * removed or renamed).
 */
const MIGRATIONS = [
  // 1: a row is written when its request reaches the model and completed as it runs (UsageState). Rows from
  // before were written at the end; those of clients that left (finish reason `cancelled`) were recorded with
  // the status the response would have had: they are client_closed.
  `ALTER TABLE usage ADD COLUMN state TEXT NOT NULL DEFAULT 'complete';
   UPDATE usage SET state = 'client_closed', status = ${CLIENT_CLOSED_STATUS} WHERE finish_reason = 'cancelled';`,
  // 2: the web console: usage over time for all keys (its charts), and visitors' access requests
  // (keys/access-requests.ts). The request's link token is kept only as a hash, as keys are.
  `CREATE INDEX IF NOT EXISTS usage_by_time ON usage (created_at);
   CREATE TABLE IF NOT EXISTS access_requests (
     id          TEXT PRIMARY KEY,
     token_hash  TEXT NOT NULL UNIQUE,
     name        TEXT NOT NULL,
     contact     TEXT NOT NULL,
     purpose     TEXT NOT NULL,
     address     TEXT NOT NULL,
     status      TEXT NOT NULL DEFAULT 'pending',
     created_at  INTEGER NOT NULL,
     decided_at  INTEGER,
     rpm         INTEGER,
     tpm         INTEGER,
     concurrency INTEGER,
     models      TEXT,
     expires_at  INTEGER,
     key_id      TEXT
   );
   CREATE INDEX IF NOT EXISTS access_requests_by_address ON access_requests (address, created_at);
   CREATE INDEX IF NOT EXISTS access_requests_by_status ON access_requests (status, created_at);`,
];

/** Where a key stands now: revoked (whatever its expiry), expired, or active. */
export function keyStatus(k: Pick<KeyInfo, "revokedAt" | "expiresAt">): "active" | "revoked" | "expired" {
  if (k.revokedAt !== null) return "revoked";
  return k.expiresAt !== null && k.expiresAt <= Date.now() ? "expired" : "active";
}

/** Neither revoked nor expired. */
function usable(k: Pick<KeyInfo, "revokedAt" | "expiresAt">): boolean {
  return keyStatus(k) === "active";
}

function toInfo(r: KeyRow): KeyInfo {
  return {
    id: r.id,
    name: r.name,
    prefix: r.prefix,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    revokedAt: r.revoked_at,
    rpm: r.rpm,
    tpm: r.tpm,
    concurrency: r.concurrency,
    models: r.models === null ? null : (JSON.parse(r.models) as string[]),
  };
}

/**
 * Keys and the usage ledger, in one SQLite file in the data directory (WAL, so several server processes and
 * the CLI can share it; every write is a `BEGIN IMMEDIATE` transaction). Keys are stored only as a SHA-256
 * hash and a short display prefix. Verification is a map lookup by hash in an in-memory cache that is
 * dropped whenever another connection has committed (SQLite's `data_version`), so a key revoked by the CLI
 * or another process stops working on the next request here.
 *
 * Durability: `synchronous = NORMAL` in WAL mode: a committed row survives a crash of the process; only a
 * power loss or OS crash may lose the last transactions.
 */
export class KeyStore implements KeyVerifier {
  private readonly db: Database.Database;
  private readonly cache = new Map<string, KeyInfo | null>();
  private dataVersion = -1;
  private readonly stmts;

  /** What other users can still read: the data directory, or a file of the store (logged by the server at start). */
  readonly warnings: string[];

  constructor(dataDir: string) {
    const dir = privateDataDir(dataDir);
    const file = join(dataDir, "lucena.db");
    // Before SQLite opens it: its WAL and shared-memory files are then made with the database file's mode.
    this.warnings = [...(dir ? [dir] : []), ...privateFile(file, [`${file}-wal`, `${file}-shm`])];
    this.db = new Database(file);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("busy_timeout = 5000");
    this.migrate();
    this.stmts = {
      dataVersion: this.db.prepare("PRAGMA data_version").pluck(),
      byHash: this.db.prepare<[string], KeyRow>("SELECT * FROM keys WHERE hash = ?"),
      byId: this.db.prepare<[string], KeyRow>("SELECT * FROM keys WHERE id = ?"),
      all: this.db.prepare<[], KeyRow>("SELECT * FROM keys ORDER BY created_at, id"),
      count: this.db.prepare("SELECT COUNT(*) FROM keys").pluck(),
      insert: this.db.prepare(
        `INSERT INTO keys (id, name, hash, prefix, created_at, expires_at, rpm, tpm, concurrency, models)
         VALUES (@id, @name, @hash, @prefix, @created_at, @expires_at, @rpm, @tpm, @concurrency, @models)`,
      ),
      revoke: this.db.prepare("UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"),
      limits: this.db.prepare(
        "UPDATE keys SET rpm = @rpm, tpm = @tpm, concurrency = @concurrency, models = @models WHERE id = @id",
      ),
      usage: this.db.prepare(
        `INSERT INTO usage (request_id, key_id, model, prompt_tokens, completion_tokens, status, state, finish_reason,
                            ttft_ms, duration_ms, stream, created_at)
         VALUES (@requestId, @keyId, @model, @promptTokens, @completionTokens, @status, @state, @finishReason,
                 @ttftMs, @durationMs, @stream, @createdAt)`,
      ),
      usageUpdate: this.db.prepare(
        `UPDATE usage SET prompt_tokens = @promptTokens, completion_tokens = @completionTokens, status = @status,
                          state = @state, finish_reason = @finishReason, ttft_ms = @ttftMs, duration_ms = @durationMs
         WHERE id = @id`,
      ),
      usageAll: this.db.prepare(
        `SELECT key_id AS keyId, COUNT(*) AS requests, SUM(prompt_tokens) AS promptTokens,
                SUM(completion_tokens) AS completionTokens, SUM(state = 'in_progress') AS inProgress
         FROM usage GROUP BY key_id ORDER BY key_id`,
      ),
      usageOne: this.db.prepare(
        `SELECT key_id AS keyId, COUNT(*) AS requests, COALESCE(SUM(prompt_tokens), 0) AS promptTokens,
                COALESCE(SUM(completion_tokens), 0) AS completionTokens,
                COALESCE(SUM(state = 'in_progress'), 0) AS inProgress
         FROM usage WHERE key_id = ?`,
      ),
    };
  }

  /** Creates a key; the full key is returned here once and never stored. */
  create(k: NewKey): { key: string; info: KeyInfo } {
    const key = `${KEY_PREFIX}${secretBase62(KEY_RANDOM_CHARS)}`;
    const now = Date.now();
    const row = {
      id: `key_${base62(16)}`,
      name: k.name,
      hash: sha256Hex(key),
      prefix: key.slice(0, KEY_PREFIX.length + DISPLAY_CHARS),
      created_at: now,
      expires_at: k.expiresAt ?? (k.expiresInMs == null ? null : now + k.expiresInMs),
      rpm: k.rpm ?? null,
      tpm: k.tpm ?? null,
      concurrency: k.concurrency ?? null,
      models: k.models == null ? null : JSON.stringify(k.models),
    };
    this.db.transaction(() => this.stmts.insert.run(row)).immediate();
    return { key, info: toInfo(this.stmts.byId.get(row.id)!) };
  }

  /** Creates the first key when the store has none (atomically, should two processes start at once). */
  createFirstKey(): { key: string; info: KeyInfo } | null {
    return this.db
      .transaction(() => ((this.stmts.count.get() as number) === 0 ? this.create({ name: "default" }) : null))
      .immediate();
  }

  list(): KeyInfo[] {
    return this.stmts.all.all().map(toInfo);
  }

  get(id: string): KeyInfo | null {
    const row = this.stmts.byId.get(id);
    return row ? toInfo(row) : null;
  }

  /** Revokes a key; false when there is no such key or it was already revoked. */
  revoke(id: string): boolean {
    const changed = this.db.transaction(() => this.stmts.revoke.run(Date.now(), id).changes).immediate();
    this.cache.clear();
    return changed > 0;
  }

  /** Sets a key's limits and models (null: none); the next request with the key sees them. Null when there is no such key. */
  setLimits(id: string, limits: KeyLimits & { models: string[] | null }): KeyInfo | null {
    const row = { id, ...limits, models: limits.models === null ? null : JSON.stringify(limits.models) };
    this.db.transaction(() => this.stmts.limits.run(row)).immediate();
    // Another connection's commit clears the cache through data_version; this connection's own does not.
    this.cache.clear();
    return this.get(id);
  }

  /**
   * The SQLite connection, for the stores that keep their tables in this file (access requests, usage reports).
   * Their writes must be `BEGIN IMMEDIATE` transactions as the store's own are.
   */
  get database(): Database.Database {
    return this.db;
  }

  verify(presentedKey: string, presentedHash?: string): Principal | null {
    if (!presentedKey.startsWith(KEY_PREFIX)) return null;
    const version = this.stmts.dataVersion.get() as number;
    if (version !== this.dataVersion) {
      this.cache.clear();
      this.dataVersion = version;
    }
    const hash = presentedHash ?? sha256Hex(presentedKey);
    let info = this.cache.get(hash);
    if (info === undefined) {
      const row = this.stmts.byHash.get(hash);
      info = row ? toInfo(row) : null;
      if (info) this.cache.set(hash, info);
    }
    if (!info || !usable(info)) return null;
    return {
      keyId: info.id,
      limits: { rpm: info.rpm, tpm: info.tpm, concurrency: info.concurrency },
      models: info.models,
    };
  }

  /** Whether a key of this store is still usable (not revoked, not expired); undefined for an id it does not have. */
  stillUsable(keyId: string): boolean | undefined {
    const row = this.stmts.byId.get(keyId);
    return row ? usable(toInfo(row)) : undefined;
  }

  /** One row per request that reached a model; returns the row's id, for `updateUsage`. */
  recordUsage(u: UsageRow): number {
    const row = { ...u, state: u.state ?? "complete", stream: u.stream ? 1 : 0, createdAt: Date.now() };
    return Number(this.db.transaction(() => this.stmts.usage.run(row).lastInsertRowid).immediate());
  }

  /** Brings a row up to date: its counts, status, state, finish, timings (the request, key and model stay). */
  updateUsage(id: number, u: Omit<UsageRow, "requestId" | "keyId" | "model" | "stream">): void {
    const row = { ...u, id, state: u.state ?? "complete" };
    this.db.transaction(() => this.stmts.usageUpdate.run(row)).immediate();
  }

  usage(keyId?: string): UsageSummary[] {
    const rows = (keyId === undefined ? this.stmts.usageAll.all() : [this.stmts.usageOne.get(keyId)]) as Array<
      Omit<UsageSummary, "totalTokens">
    >;
    return rows.map((r) => ({ ...r, keyId: keyId ?? r.keyId, totalTokens: r.promptTokens + r.completionTokens }));
  }

  close(): void {
    this.db.close();
  }

  /** Creates the tables of a new store and applies the migrations an older one lacks, in one transaction. */
  private migrate(): void {
    this.db
      .transaction(() => {
        this.db.exec(SCHEMA);
        const version = this.db.pragma("user_version", { simple: true }) as number;
        for (const migration of MIGRATIONS.slice(version)) this.db.exec(migration);
        if (version < MIGRATIONS.length) this.db.pragma(`user_version = ${MIGRATIONS.length}`);
      })
      .immediate();
  }
}
