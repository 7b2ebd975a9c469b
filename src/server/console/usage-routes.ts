import type { FastifyInstance, RouteShorthandOptions } from "fastify";
import { errors } from "../../core/errors.js";
import type { KeyVerifier } from "../../core/principal.js";
import { secs } from "../../keys/admin-ops.js";
import type { KeyStore } from "../../keys/store.js";
import type { UsageBucket, UsageReports } from "../../keys/usage-report.js";
import type { LiveView } from "../../observability/live-view.js";
import { authenticate } from "../auth.js";
import type { ModelRegistry } from "../registry.js";

export interface UsageRouteOptions {
  store: KeyStore;
  reports: UsageReports;
  live: LiveView;
  registry: ModelRegistry;
  keys: KeyVerifier;
  /** The operator's session check (operator-routes.ts). */
  operator: RouteShorthandOptions;
}

type UsageQuery = { bucket?: string; key_id?: string; model?: string };

/** One value each (a repeated field is a 400 naming it, not an array reaching SQLite). */
const usageQuery = {
  querystring: {
    type: "object",
    properties: { bucket: { type: "string" }, key_id: { type: "string" }, model: { type: "string" } },
  },
} as const;

function bucketOf(q: UsageQuery): UsageBucket {
  const bucket = q.bucket ?? "hour";
  if (bucket !== "hour" && bucket !== "day") throw errors.invalidRequest("bucket must be hour or day.", "bucket");
  return bucket;
}

const MiB = 1024 * 1024;

/**
 * Usage over time for the operator (every key, or one key or model) and for a key holder (their own key, with the
 * key as Bearer token, as on /v1), and the operator's live view of the models.
 */
export function usageRoutes(app: FastifyInstance, o: UsageRouteOptions): void {
  app.get<{ Querystring: UsageQuery }>("/console/api/usage", { ...o.operator, schema: usageQuery }, async (req) =>
    o.reports.report({ bucket: bucketOf(req.query), keyId: req.query.key_id || null, model: req.query.model || null }),
  );

  app.get<{ Querystring: UsageQuery }>("/console/api/my-usage", { schema: usageQuery }, async (req, reply) => {
    const principal = authenticate(req.headers.authorization, o.keys);
    const report = o.reports.report({ bucket: bucketOf(req.query), keyId: principal.keyId, byKey: false });
    const info = o.store.get(principal.keyId);
    const key = info && {
      id: info.id,
      name: info.name,
      prefix: info.prefix,
      rpm: info.rpm,
      tpm: info.tpm,
      concurrency: info.concurrency,
      models: info.models,
      expires_at: secs(info.expiresAt),
    };
    return reply.header("cache-control", "no-store").send({ key: key ?? { id: principal.keyId }, ...report });
  });

  app.get("/console/api/live", o.operator, async (_req, reply) =>
    reply.header("cache-control", "no-store").send({
      uptime_s: Math.round(process.uptime()),
      rss_mb: Math.round(process.memoryUsage.rss() / MiB),
      models: o.registry.models.map((m) => {
        const s = m.engine.stats();
        const minute = o.live.lastMinute(m.config.id);
        return {
          id: m.config.id,
          status: m.engine.status,
          sequences: s.sequences,
          busy: s.busy,
          waiting: s.waiting,
          tokens_per_second: minute.tokensPerSecond,
          requests_last_minute: minute.requests,
        };
      }),
      recent_errors: o.live.recentErrors().map((e) => ({
        time: e.time,
        status: e.status,
        method: e.method,
        route: e.route,
        model: e.model,
        key_id: e.keyId,
        request_id: e.requestId,
      })),
    }),
  );
}
