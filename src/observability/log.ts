import { pino, type Logger } from "pino";

export type { Logger };

/**
 * One structured JSON logger for the process. Request logs carry ids, routes, statuses, models and token
 * counts; never keys, prompts or completions. The Authorization header is redacted should anything log it.
 */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { pid: process.pid },
    redact: { paths: ["req.headers.authorization", "headers.authorization", "authorization"], censor: "[redacted]" },
  });
}
