import type { FastifyInstance } from "fastify";
import { modelObject } from "../../api/responses.js";
import type { ModelRegistry, ServedModel } from "../registry.js";

export function modelsRoute(app: FastifyInstance, registry: ModelRegistry): void {
  const list = (models: readonly ServedModel[]) =>
    JSON.stringify({ object: "list", data: models.map((m) => modelObject(m.config, registry.description(m))) });
  // The full list is serialised once per configuration (a reload makes it again); a key restricted to some
  // models sees only those.
  let all = { version: registry.version, body: list(registry.models) };
  app.get("/v1/models", async (req, reply) => {
    if (all.version !== registry.version) all = { version: registry.version, body: list(registry.models) };
    const body = req.principal?.models ? list(registry.visible(req.principal)) : all.body;
    return reply.type("application/json; charset=utf-8").send(body);
  });
  // One model, exactly as in the list; an unknown id and one the key may not use get the same 404. A wildcard:
  // an id may hold slashes (`org/name`, as vLLM serves them).
  app.get<{ Params: { "*": string } }>("/v1/models/*", async (req, reply) => {
    const m = registry.find(req.params["*"], req.principal);
    return reply.send(modelObject(m.config, registry.description(m)));
  });
}
