import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { EngineStatus } from "../engines/engine.js";
import type { Logger } from "../observability/log.js";
import type { Metrics } from "../observability/metrics.js";
import { errors } from "../core/errors.js";
import { httpError } from "./http-errors.js";
import type { ModelRegistry } from "./registry.js";

export interface OpsOptions {
  registry: ModelRegistry;
  metrics: Metrics;
  log: Logger;
}

export interface Health {
  /** ok: every model is ready; degraded: at least one is loading, failed, or unavailable (no replica up). */
  status: "ok" | "degraded";
  models: Record<string, EngineStatus>;
}

/** Every model's state; ok only when all of them can serve. */
export function health(registry: ModelRegistry): Health {
  // Own properties, whatever the ids: an assignment would send a model id such as "__proto__" to the prototype.
  const models: Record<string, EngineStatus> = Object.fromEntries(
    registry.models.map((m) => [m.config.id, m.engine.status]),
  );
  return { status: Object.values(models).every((s) => s === "ready") ? "ok" : "degraded", models };
}

/**
 * The operations listener: health and Prometheus metrics, no keys. It is not public API (docs/api.md, "Operations listener"): it
 * listens on its own address, loopback by default. `/health` answers 200 when every model is ready and 503
 * (same body, status "degraded") while any is loading or failed, so it serves as a readiness check; any
 * answer at all means the process is alive. Scrapes are not logged (one line every few seconds is noise).
 */
export function buildOpsApp(opts: OpsOptions): FastifyInstance {
  const app = Fastify({
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- it sets the instance's logger type
    loggerInstance: opts.log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
  });
  app.get("/health", async (_req, reply) => {
    const h = health(opts.registry);
    return reply
      .code(h.status === "ok" ? 200 : 503)
      .header("cache-control", "no-store")
      .send(h);
  });
  app.get("/metrics", async (_req, reply) => {
    const { contentType, body } = await opts.metrics.scrape();
    return reply.type(contentType).header("cache-control", "no-store").send(body);
  });
  app.setNotFoundHandler(async (_req, reply) => {
    const { status, body } = httpError(errors.routeNotFound());
    return reply.code(status).send(body);
  });
  return app;
}
