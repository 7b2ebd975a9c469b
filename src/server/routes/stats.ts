import type { FastifyInstance } from "fastify";

const MiB = 1024 * 1024;

export function statsRoute(app: FastifyInstance): void {
  app.get("/v1/stats", async () => {
    const m = process.memoryUsage();
    return {
      heap_used_mb: Math.round(m.heapUsed / MiB),
      heap_total_mb: Math.round(m.heapTotal / MiB),
      rss_mb: Math.round(m.rss / MiB),
    };
  });
}
