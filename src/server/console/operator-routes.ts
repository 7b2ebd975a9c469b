import type { FastifyInstance, FastifyReply, FastifyRequest, RouteShorthandOptions } from "fastify";
import { errors } from "../../core/errors.js";
import type { AccessRequest, AccessRequests, AccessStatus } from "../../keys/access-requests.js";
import {
  keyJson,
  parsedForApi,
  parseKeyLimits,
  parseKeyRequest,
  parseLimitChange,
  secs,
  type KeyRequest,
} from "../../keys/admin-ops.js";
import { keyStatus, type KeyStore } from "../../keys/store.js";
import type { ModelRegistry } from "../registry.js";
import { adminTokenCheck, type SignInGuard } from "../sign-in-guard.js";
import { SESSION_TTL_MS, type ConsoleSessions } from "./session.js";

export const SESSION_COOKIE = "lucena_console";

export interface OperatorOptions {
  store: KeyStore;
  requests: AccessRequests;
  registry: ModelRegistry;
  sessions: ConsoleSessions;
  guard: SignInGuard;
  /** null: no admin token is configured, and nobody can sign in. */
  adminToken: string | null;
}

function requestJson(r: AccessRequest) {
  return {
    id: r.id,
    name: r.name,
    contact: r.contact,
    purpose: r.purpose,
    address: r.address,
    status: r.status,
    created_at: secs(r.createdAt),
    decided_at: secs(r.decidedAt),
    key_id: r.keyId,
    limits: r.limits && {
      rpm: r.limits.rpm,
      tpm: r.limits.tpm,
      concurrency: r.limits.concurrency,
      models: r.limits.models,
      expires_at: secs(r.limits.expiresAt),
    },
  };
}

/**
 * The operator's side of the console: sign-in with the admin token (then a session cookie), access requests to
 * decide, keys, usage and the live view (usage-routes.ts). Every route but the session's needs a session.
 */
export function operatorRoutes(app: FastifyInstance, o: OperatorOptions): void {
  const checkToken = adminTokenCheck(o.adminToken, o.guard);
  const signedIn = (req: FastifyRequest) => o.sessions.valid(req.cookies[SESSION_COOKIE]);
  const operator = operatorOnly(o.sessions);
  const knownModels = (models: string[] | null | undefined) => {
    const unknown = models?.filter((m) => !o.registry.models.some((s) => s.config.id === m));
    if (unknown?.length) throw errors.invalidRequest(`No such model: '${unknown[0]}'.`, "models");
  };
  const body = (req: FastifyRequest) => (req.body ?? {}) as KeyRequest;
  const ownKey = (id: string) => o.store.get(id) ?? throwKeyNotFound(id);

  app.get("/console/api/session", async (req, reply) =>
    reply
      .header("cache-control", "no-store")
      .send({ signed_in: signedIn(req), admin_configured: o.adminToken !== null }),
  );

  app.post<{ Body: { token?: unknown } }>("/console/api/session", { bodyLimit: 4096 }, async (req, reply) => {
    const { ok, address, failures } = checkToken(typeof req.body?.token === "string" ? req.body.token : "", req.ip);
    if (!ok) {
      // The address and the count, never what was typed.
      req.log.warn({ address, failures }, "console sign-in failed");
      throw errors.invalidAdminToken();
    }
    setSession(reply, req, o.sessions.create());
    req.log.info({ address }, "console sign-in");
    return { signed_in: true };
  });

  app.delete("/console/api/session", async (req, reply) => {
    o.sessions.end(req.cookies[SESSION_COOKIE]);
    reply.clearCookie(SESSION_COOKIE, { path: "/" });
    return { signed_in: false };
  });

  app.get<{ Querystring: { status?: string } }>("/console/api/requests", operator, async (req) => {
    const status = (req.query.status ?? "all") as AccessStatus | "all";
    if (!["pending", "approved", "issued", "rejected", "all"].includes(status))
      throw errors.invalidRequest("status must be pending, approved, issued, rejected or all.", "status");
    return { object: "list", data: o.requests.list(status).map(requestJson) };
  });

  app.post<{ Params: { id: string } }>("/console/api/requests/:id/approve", operator, async (req) => {
    const limits = parsedForApi(() => parseKeyLimits(body(req)));
    knownModels(limits.models);
    const decided = o.requests.approve(req.params.id, limits);
    req.log.info({ request: decided.id }, "access request approved");
    return requestJson(decided);
  });

  app.post<{ Params: { id: string } }>("/console/api/requests/:id/reject", operator, async (req) => {
    const decided = o.requests.reject(req.params.id);
    req.log.info({ request: decided.id }, "access request rejected");
    return requestJson(decided);
  });

  app.get("/console/api/keys", operator, async () => {
    const usage = new Map(o.store.usage().map((u) => [u.keyId, u]));
    return {
      object: "list",
      data: o.store.list().map((k) => ({
        ...keyJson(k),
        status: keyStatus(k),
        requests: usage.get(k.id)?.requests ?? 0,
        total_tokens: usage.get(k.id)?.totalTokens ?? 0,
      })),
    };
  });

  app.post("/console/api/keys", operator, async (req, reply) => {
    const wanted = parsedForApi(() => parseKeyRequest(body(req)));
    knownModels(wanted.models);
    const { key, info } = o.store.create(wanted);
    req.log.info({ key: info.id }, "key created in the console");
    const { id, ...rest } = keyJson(info);
    return reply
      .code(201)
      .header("cache-control", "no-store")
      .send({ id, key, ...rest });
  });

  app.patch<{ Params: { id: string } }>("/console/api/keys/:id", operator, async (req) => {
    const key = ownKey(req.params.id);
    if (key.revokedAt !== null) throw errors.invalidRequest("The key is revoked: its limits cannot change.", "id");
    const change = parsedForApi(() => parseLimitChange(body(req), key));
    knownModels(change.models);
    const changed = o.store.setLimits(key.id, change)!;
    req.log.info({ key: key.id }, "key limits changed in the console");
    return keyJson(changed);
  });

  app.post<{ Params: { id: string } }>("/console/api/keys/:id/revoke", operator, async (req) => {
    const key = ownKey(req.params.id);
    o.store.revoke(key.id);
    req.log.info({ key: key.id }, "key revoked in the console");
    return keyJson(o.store.get(key.id)!);
  });
}

/** Route options that refuse a request without a valid session (401, before its body is read). */
export function operatorOnly(sessions: ConsoleSessions): RouteShorthandOptions {
  return {
    onRequest: async (req: FastifyRequest) => {
      if (!sessions.valid(req.cookies[SESSION_COOKIE])) throw errors.consoleSignIn();
    },
  };
}

/** The session cookie: HttpOnly, SameSite=Strict, Secure when the page came over HTTPS. */
function setSession(reply: FastifyReply, req: FastifyRequest, id: string): void {
  reply.setCookie(SESSION_COOKIE, id, {
    path: "/",
    httpOnly: true,
    sameSite: "strict",
    secure: req.protocol === "https",
    maxAge: SESSION_TTL_MS / 1000,
  });
}

function throwKeyNotFound(id: string): never {
  throw errors.keyNotFound(id);
}
