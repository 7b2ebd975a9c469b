import { DEMO_NOTICE } from "../config/defaults.js";
import type { ModelConfig } from "../config/schema.js";
import type { Engine } from "../engines/engine.js";
import type { Logger } from "../observability/log.js";
import { errors } from "./errors.js";

export interface ServedModel {
  readonly config: ModelConfig;
  readonly engine: Engine;
  /** Served from the project's own demo model (random weights). */
  readonly demo: boolean;
}

/** The configured models and their engines. Listing needs no engine; generating and counting need it ready. */
export class ModelRegistry {
  private readonly byId: Map<string, ServedModel>;

  constructor(readonly models: readonly ServedModel[]) {
    this.byId = new Map(models.map((m) => [m.config.id, m]));
  }

  ids(): string[] {
    return [...this.byId.keys()];
  }

  description(m: ServedModel): string {
    return m.demo ? `${m.config.description} ${DEMO_NOTICE}` : m.config.description;
  }

  /** The model, ready to serve; 404 for an unknown id, 503 with Retry-After while it loads. */
  ready(id: string): ServedModel {
    const m = this.byId.get(id);
    if (!m) throw errors.modelNotFound(id, this.ids());
    if (m.engine.status === "loading") throw errors.modelLoading(id, 5);
    if (m.engine.status === "failed") throw errors.modelUnavailable(id, 30);
    return m;
  }

  /** Loads every model; a model that fails is logged and answers 503, the others serve. */
  async loadAll(log: Logger): Promise<void> {
    for (const m of this.models) {
      if (m.demo) log.warn({ model: m.config.id }, DEMO_NOTICE);
      await m.engine.load().catch(() => undefined); // the engine logged why
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.models.map((m) => m.engine.close()));
  }
}
