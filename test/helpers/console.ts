import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from "fastify";
import { KeyStore } from "../../src/keys/store.js";
import type { SignInGuard } from "../../src/server/sign-in-guard.js";
import type { Logger } from "../../src/observability/log.js";
import { UsageLedger } from "../../src/keys/ledger.js";
import { pino } from "pino";
import { setup, type TestApp } from "./fake-engine.js";

export const ADMIN_TOKEN = "admin-token-for-the-console-tests";

export interface ConsoleApp extends TestApp {
  store: KeyStore;
}

/** An app around a FakeEngine with the console on, a real key store and ledger in a fresh directory. */
export function consoleApp(
  t: TestContext,
  opts: {
    open?: boolean;
    perHour?: number;
    adminToken?: string | null;
    guard?: SignInGuard;
    log?: Logger;
    corsOrigins?: string[];
    trustProxy?: boolean | string;
    /** The admin API too, with the same token. */
    adminApi?: boolean;
  } = {},
): ConsoleApp {
  const store = new KeyStore(mkdtempSync(join(tmpdir(), "lucena-console-")));
  t.after(() => store.close());
  const built = setup(t, {
    keys: store,
    usage: new UsageLedger(store, pino({ level: "silent" })),
    console: {
      store,
      adminToken: opts.adminToken === undefined ? ADMIN_TOKEN : opts.adminToken,
      accessRequests: { open: opts.open ?? true, perHour: opts.perHour ?? 100 },
      version: "0.0.0-test",
    },
    ...(opts.guard ? { signInGuard: opts.guard } : {}),
    ...(opts.adminApi ? { admin: { token: ADMIN_TOKEN, store } } : {}),
    ...(opts.log ? { log: opts.log } : {}),
    ...(opts.corsOrigins ? { corsOrigins: opts.corsOrigins } : {}),
    ...(opts.trustProxy !== undefined ? { trustProxy: opts.trustProxy } : {}),
  });
  return { ...built, store };
}

/**
 * A browser's view of the console through inject: it keeps the cookies the server sets and sends them back, and
 * sends the CSRF token (fetched once) with every state-changing request, as the pages do.
 */
export class Browser {
  private readonly cookies = new Map<string, string>();
  private csrf: string | null = null;

  constructor(
    private readonly app: FastifyInstance,
    private readonly address = "127.0.0.1",
  ) {}

  async request(opts: InjectOptions & { csrf?: boolean }): Promise<LightMyRequestResponse> {
    const method = (opts.method ?? "GET").toUpperCase();
    const headers: Record<string, string> = { ...(opts.headers as Record<string, string> | undefined) };
    if (method !== "GET" && opts.csrf !== false) {
      this.csrf ??= (await this.json("/console/api/csrf")).csrf_token as string;
      headers["x-csrf-token"] = this.csrf;
    }
    if (opts.payload !== undefined) headers["content-type"] ??= "application/json";
    const res = await this.app.inject({
      ...opts,
      remoteAddress: this.address,
      headers,
      cookies: Object.fromEntries(this.cookies),
      payload: opts.payload === undefined ? undefined : JSON.stringify(opts.payload),
    });
    for (const c of res.cookies as Array<{ name: string; value: string; maxAge?: number }>) {
      if (c.value === "" || c.maxAge === 0) this.cookies.delete(c.name);
      else this.cookies.set(c.name, c.value);
    }
    return res;
  }

  async json(url: string): Promise<Record<string, unknown>> {
    const res = await this.request({ url });
    assert.equal(res.statusCode, 200, `${url}: ${res.statusCode} ${res.body}`);
    return res.json();
  }

  post(url: string, payload: unknown = {}, extra: Partial<InjectOptions> & { csrf?: boolean } = {}) {
    return this.request({ method: "POST", url, payload: payload as InjectOptions["payload"], ...extra });
  }

  cookie(name: string): string | undefined {
    return this.cookies.get(name);
  }

  async signIn(token = ADMIN_TOKEN): Promise<LightMyRequestResponse> {
    return this.post("/console/api/session", { token });
  }
}
