import type { FastifyInstance } from "fastify";
import {
  createKey,
  keyJson,
  parsedForApi,
  parseLimitChange,
  usageJson,
  type KeyRequest,
} from "../../keys/admin-ops.js";
import type { KeyStore } from "../../keys/store.js";
import { bearerToken } from "../auth.js";
import { errors } from "../../core/errors.js";
import { adminTokenCheck, type SignInGuard } from "../sign-in-guard.js";

/**
 * Checks the admin bearer token (adminTokenCheck); an ordinary API key never passes. Failures count against the
 * client's address, shared with the console's sign-in: a locked-out address gets 429 here too.
 */
export function adminGuard(token: string, guard: SignInGuard): (header: string | undefined, ip: string) => void {
  const check = adminTokenCheck(token, guard);
  return (header, ip) => {
    if (!check(bearerToken(header) ?? "", ip).ok) throw errors.invalidAdminToken();
  };
}

/**
 * The key operations of `lucena keys` over HTTP, under /admin/v1. Registered only when an admin token is
 * configured; every route is marked `admin`, which makes the auth hook ask for the admin token instead of a key.
 */
export function adminRoutes(app: FastifyInstance, store: KeyStore): void {
  const config = { admin: true };
  app.post<{ Body: KeyRequest }>("/admin/v1/keys", { config }, async (req, reply) => {
    if (typeof req.body !== "object" || req.body === null) throw errors.invalidRequest("Send a JSON object.");
    const body = req.body;
    return reply.code(201).send(parsedForApi(() => createKey(store, body)));
  });
  app.get("/admin/v1/keys", { config }, async () => ({ object: "list", data: store.list().map(keyJson) }));
  // A key's limits and models: each field given replaces the key's (null removes it), as in the console.
  app.patch<{ Params: { id: string }; Body: KeyRequest }>("/admin/v1/keys/:id", { config }, async (req) => {
    const key = store.get(req.params.id);
    if (!key) throw errors.keyNotFound(req.params.id);
    if (typeof req.body !== "object" || req.body === null) throw errors.invalidRequest("Send a JSON object.");
    const body = req.body;
    return keyJson(
      store.setLimits(
        key.id,
        parsedForApi(() => parseLimitChange(body, key)),
      )!,
    );
  });
  app.delete<{ Params: { id: string } }>("/admin/v1/keys/:id", { config }, async (req) => {
    const key = store.get(req.params.id);
    if (!key) throw errors.keyNotFound(req.params.id);
    store.revoke(key.id);
    return keyJson(store.get(key.id)!);
  });
  app.get<{ Querystring: { key_id?: string } }>("/admin/v1/usage", { config }, async (req) => ({
    object: "list",
    data: store.usage(req.query.key_id).map(usageJson),
  }));
}

declare module "fastify" {
  interface FastifyContextConfig {
    /** The route is part of the admin API: it needs the admin token, not an API key. */
    admin?: boolean;
  }
}
