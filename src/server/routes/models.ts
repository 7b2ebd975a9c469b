import type { FastifyInstance } from "fastify";
import { modelObject } from "../../api/responses.js";
import type { ModelRegistry, ServedModel } from "../registry.js";

export function modelsRoute(app: FastifyInstance, registry: ModelRegistry): void {
  const list = (models: readonly ServedModel[]) =>
    JSON.stringify({ object: "list", data: models.map((m) => modelObject(m.config, registry.description(m))) });
  // Models and descriptions are fixed after start: the full list is serialised once; a key restricted to some
  // models sees only those.
  const all = list(registry.models);
  app.get("/v1/models", async (req, reply) => {
    const body = req.principal?.models ? list(registry.visible(req.principal)) : all;
    return reply.type("application/json; charset=utf-8").send(body);
  });
  // One model, exactly as in the list; an unknown id and one the key may not use get the same 404. A wildcard:
  // an id may hold slashes (`org/name`, as vLLM serves them).
  app.get<{ Params: { "*": string } }>("/v1/models/*", async (req, reply) => {
    const m = registry.find(req.params["*"], req.principal);
    return reply.send(modelObject(m.config, registry.description(m)));
  });
}
