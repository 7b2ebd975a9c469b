import { DEMO_NOTICE } from "../config/defaults.js";
import type { ModelConfig } from "../config/schema.js";
import type { Engine } from "../engines/engine.js";
import type { Logger } from "../observability/log.js";
import type { Principal } from "../core/principal.js";
import { errors } from "../core/errors.js";

export interface ServedModel {
  readonly config: ModelConfig;
  readonly engine: Engine;
  /** Served from the project's own demo model (random weights). */
  readonly demo: boolean;
}

/** A model's settings that its engine was made with: a change needs a restart. */
const ENGINE_FIELDS = [
  "kind",
  "source",
  "upstream",
  "context_size",
  "parallel",
  "queue_size",
  "threads",
  "batch_size",
  "tpot_target_ms",
  "flash_attention",
  "mmap",
] as const satisfies readonly (keyof ModelConfig)[];

/** The configured models and their engines. Listing needs no engine; generating and counting need it ready. */
export class ModelRegistry {
  private byId: Map<string, ServedModel>;
  private served: ServedModel[];
  /** Counts reloads: what is derived from the models (the list's JSON) is made again when it changes. */
  version = 0;

  constructor(models: readonly ServedModel[]) {
    this.served = [...models];
    this.byId = new Map(models.map((m) => [m.config.id, m]));
  }

  get models(): readonly ServedModel[] {
    return this.served;
  }

  /**
   * A reloaded configuration (SIGHUP): each model's settings that do not touch its engine (its identity and
   * description, limits, system prompt, shapes, default answer length, temperature) take effect for the next
   * request. Models added or removed, and engine settings changed, need a restart: they are listed, and the
   * running model keeps its settings.
   */
  reconfigure(next: readonly ModelConfig[]): string[] {
    const needRestart: string[] = [];
    const ids = new Set(next.map((m) => m.id));
    for (const m of this.served) if (!ids.has(m.config.id)) needRestart.push(`model "${m.config.id}" removed`);
    this.served = this.served.map((m) => {
      const config = next.find((c) => c.id === m.config.id);
      if (!config) return m;
      const changed = ENGINE_FIELDS.filter((f) => JSON.stringify(config[f]) !== JSON.stringify(m.config[f]));
      if (changed.length > 0) {
        needRestart.push(`model "${m.config.id}": ${changed.join(", ")}`);
        return { ...m, config: { ...config, ...Object.fromEntries(ENGINE_FIELDS.map((f) => [f, m.config[f]])) } };
      }
      return { ...m, config };
    });
    for (const c of next) if (!this.byId.has(c.id)) needRestart.push(`model "${c.id}" added`);
    this.byId = new Map(this.served.map((m) => [m.config.id, m]));
    this.version++;
    return needRestart;
  }

  ids(): string[] {
    return [...this.byId.keys()];
  }

  description(m: ServedModel): string {
    return m.demo ? `${m.config.description} ${DEMO_NOTICE}` : m.config.description;
  }

  /** The models a key may see (all, for a key without a model list). */
  visible(principal: Principal | null): ServedModel[] {
    const allowed = principal?.models;
    return allowed ? this.models.filter((m) => allowed.includes(m.config.id)) : [...this.models];
  }

  /**
   * The model, ready to serve; 404 for an unknown id or one the key may not use (it must not learn that it
   * exists), 503 with Retry-After while it loads.
   */
  ready(id: string, principal: Principal | null = null): ServedModel {
    const m = this.find(id, principal);
    if (m.engine.status === "loading") throw errors.modelLoading(id, 5);
    if (m.engine.status === "failed") throw errors.modelUnavailable(id, 30);
    if (m.engine.status === "unavailable") throw errors.modelUnavailable(id, 5);
    return m;
  }

  /** A chat model, ready: an embedding model is a 400 naming `model` (it answers /v1/embeddings only). */
  chat(id: string, principal: Principal | null = null): ServedModel {
    const m = this.ready(id, principal);
    if (m.config.kind === "embedding") {
      throw errors.invalidRequest(
        `The model '${m.config.id}' is an embedding model: it answers POST /v1/embeddings only.`,
        "model",
      );
    }
    return m;
  }

  /** An embedding model, ready: a chat model is a 400 naming `model`. */
  embedding(id: string, principal: Principal | null = null): ServedModel & { engine: Required<Pick<Engine, "embed">> } {
    const m = this.ready(id, principal);
    if (m.config.kind !== "embedding" || !m.engine.embed) {
      throw errors.invalidRequest(
        `The model '${m.config.id}' is a chat model: POST /v1/embeddings needs a model configured with kind "embedding".`,
        "model",
      );
    }
    return m as ServedModel & { engine: Required<Pick<Engine, "embed">> };
  }

  /** The model, in any state; 404 for an unknown id or one the key may not use, the same answer for both. */
  find(id: string, principal: Principal | null = null): ServedModel {
    const m = this.byId.get(id);
    const allowed = principal?.models;
    if (!m || (allowed && !allowed.includes(id)))
      throw errors.modelNotFound(
        id,
        this.visible(principal).map((v) => v.config.id),
      );
    return m;
  }

  /** Loads every model; a model that fails is logged and answers 503, the others serve. Returns the failures. */
  async loadAll(log: Logger): Promise<{ id: string; reason: string }[]> {
    const failed: { id: string; reason: string }[] = [];
    for (const m of this.models) {
      if (m.demo) log.warn({ model: m.config.id }, DEMO_NOTICE);
      // The engine logged why; the first line of its reason is kept for the caller.
      await m.engine.load().catch((err: unknown) => {
        failed.push({ id: m.config.id, reason: String((err as Error).message ?? err).split("\n")[0]! });
      });
    }
    return failed;
  }

  async close(): Promise<void> {
    await Promise.all(this.served.map((m) => m.engine.close()));
  }
}
