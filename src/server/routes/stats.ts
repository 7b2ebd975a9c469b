import type { FastifyInstance } from "fastify";
import type { ModelRegistry } from "../registry.js";

const MiB = 1024 * 1024;

/**
 * The reference's three memory figures, then (more fields may follow: docs/api.md, "GET /v1/stats") each model's engine counters:
 * sequences busy and waiting, prompt tokens evaluated or served from a sequence's cache (prefix reuse); for an
 * embedded model, the CPU threads its decode steps use now, and the step scheduler's measured costs and prompt
 * budget (step-gate.ts).
 */
export function statsRoute(app: FastifyInstance, registry: ModelRegistry): void {
  app.get("/v1/stats", async (req) => {
    const m = process.memoryUsage();
    // fromEntries makes each id an own property: an assignment would send an id such as "__proto__" to the prototype.
    const models = Object.fromEntries(
      registry.visible(req.principal).map((served) => {
        const s = served.engine.stats();
        return [
          served.config.id,
          {
            status: served.engine.status,
            sequences: s.sequences,
            busy: s.busy,
            waiting: s.waiting,
            prompt_tokens_evaluated: s.promptTokensEvaluated,
            prompt_tokens_reused: s.promptTokensReused,
            ...(s.threads !== undefined ? { threads: s.threads } : {}),
            ...(s.scheduler
              ? {
                  scheduler: {
                    steps: s.scheduler.steps,
                    tpot_target_ms: s.scheduler.tpotTargetMs,
                    prompt_token_ms: s.scheduler.promptTokenMs,
                    decode_step_ms: s.scheduler.decodeStepMs,
                    prompt_budget: s.scheduler.promptBudget,
                  },
                }
              : {}),
          },
        ];
      }),
    );
    return {
      heap_used_mb: Math.round(m.heapUsed / MiB),
      heap_total_mb: Math.round(m.heapTotal / MiB),
      rss_mb: Math.round(m.rss / MiB),
      models,
    };
  });
}
