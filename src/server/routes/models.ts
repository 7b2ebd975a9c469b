import type { FastifyInstance } from "fastify";
import { modelObject } from "../../api/responses.js";
import type { ModelRegistry } from "../registry.js";

export function modelsRoute(app: FastifyInstance, registry: ModelRegistry): void {
  const list = () => ({
    object: "list",
    data: registry.models.map((m) => modelObject(m.config, registry.description(m))),
  });
  // Models and descriptions are fixed after start: serialise once.
  const body = JSON.stringify(list());
  app.get("/v1/models", async (_req, reply) => reply.type("application/json; charset=utf-8").send(body));
}
