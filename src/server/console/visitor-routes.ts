import { Type, type Static } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { errors } from "../../core/errors.js";
import { ACCESS_FIELD_LIMITS, type AccessRequests } from "../../keys/access-requests.js";
import { keyJson, secs } from "../../keys/admin-ops.js";
import type { ModelRegistry } from "../registry.js";
import { addressKey } from "../sign-in-guard.js";

const field = (max: number) => Type.String({ minLength: 1, maxLength: max });

const AccessRequestBody = Type.Object(
  {
    name: field(ACCESS_FIELD_LIMITS.name),
    contact: field(ACCESS_FIELD_LIMITS.contact),
    purpose: field(ACCESS_FIELD_LIMITS.purpose),
  },
  { additionalProperties: false },
);

const TokenBody = Type.Object(
  { token: Type.String({ minLength: 1, maxLength: 100 }) },
  { additionalProperties: false },
);

/** The largest body a visitor's route reads: the three fields at their limits, escaped, with room to spare. */
export const VISITOR_BODY_LIMIT = 64 * 1024;

/** Whether the form is open (`access_requests`), and how many requests one address may make an hour. */
export interface AccessRequestPolicy {
  open: boolean;
  perHour: number;
}

export interface VisitorOptions {
  registry: ModelRegistry;
  requests: AccessRequests;
  /** Read on each request (a configuration reload may change it). */
  policy: Readonly<AccessRequestPolicy>;
  /** Without an admin token nobody could decide a request: the form is then closed whatever the policy says. */
  operatorCanDecide: boolean;
  version: string;
}

/**
 * What a visitor may do without a key: read what this server is, ask for access, and follow their request with
 * its link's token (sent in the body, never in a URL: the status page keeps it in the fragment).
 */
export function visitorRoutes(app: FastifyInstance, o: VisitorOptions): void {
  app.get("/console/api/info", async (_req, reply) =>
    reply.header("cache-control", "no-store").send({
      server: "Lucena One",
      version: o.version,
      access_requests_open: o.policy.open && o.operatorCanDecide,
      models: o.registry.models.map((m) => ({
        id: m.config.id,
        name: m.config.name,
        description: o.registry.description(m),
        kind: m.config.kind,
        context_window: m.config.context_window,
        max_input_tokens: m.config.max_input_tokens,
        max_output_tokens: m.config.max_output_tokens,
        shapes: Object.keys(m.config.shapes),
      })),
    }),
  );

  // The token for the `x-csrf-token` header; its secret goes in an HttpOnly, SameSite=Strict cookie.
  app.get("/console/api/csrf", async (req, reply) =>
    reply
      .header("cache-control", "no-store")
      .send({ csrf_token: reply.generateCsrf({ secure: req.protocol === "https" }) }),
  );

  const limits = { bodyLimit: VISITOR_BODY_LIMIT };
  app.post<{ Body: Static<typeof AccessRequestBody> }>(
    "/console/api/access-requests",
    { ...limits, schema: { body: AccessRequestBody } },
    async (req, reply) => {
      if (!o.policy.open || !o.operatorCanDecide) throw errors.accessRequestsClosed();
      const fields = { name: req.body.name.trim(), contact: req.body.contact.trim(), purpose: req.body.purpose.trim() };
      for (const [name, value] of Object.entries(fields)) {
        if (value === "") throw errors.invalidRequest(`'${name}' must not be blank.`, name);
      }
      const address = addressKey(req.ip);
      const { token } = o.requests.submit({ ...fields, address }, o.policy.perHour);
      req.log.info({ address }, "access requested");
      return reply.code(201).send({ status: "pending", token, status_path: `/access#${token}` });
    },
  );

  app.post<{ Body: Static<typeof TokenBody> }>(
    "/console/api/access-requests/status",
    { ...limits, schema: { body: TokenBody } },
    async (req, reply) => {
      const r = o.requests.byToken(req.body.token);
      if (!r) throw errors.accessRequestNotFound();
      return reply.header("cache-control", "no-store").send({
        status: r.status,
        name: r.name,
        created_at: secs(r.createdAt),
        decided_at: secs(r.decidedAt),
      });
    },
  );

  app.post<{ Body: Static<typeof TokenBody> }>(
    "/console/api/access-requests/key",
    { ...limits, schema: { body: TokenBody } },
    async (req, reply) => {
      const { key, info } = o.requests.reveal(req.body.token);
      req.log.info({ key: info.id }, "access request's key shown");
      const { id, ...rest } = keyJson(info);
      return reply.header("cache-control", "no-store").send({ key, key_id: id, ...rest });
    },
  );
}
