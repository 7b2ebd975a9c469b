import { pino, stdTimeFunctions, type Logger } from "pino";
import pretty from "pino-pretty";

export type { Logger };

/** How log lines are written: `json` (a line of JSON each), `pretty` (for people), `auto` (pretty on a terminal). */
export type LogFormat = "auto" | "json" | "pretty";

/**
 * One structured logger for the process. Request logs carry ids, routes, statuses, models and token counts;
 * never keys, prompts or completions. The Authorization header is redacted should anything log it. On a
 * terminal (or with `pretty`) lines are written for people: local time, the level's name, the message, then the
 * fields; elsewhere (a service, a container, a file) one JSON object a line with an ISO time, for log shippers.
 */
export function createLogger(level: string, format: LogFormat = "json"): Logger {
  const options = {
    level,
    base: { pid: process.pid },
    timestamp: stdTimeFunctions.isoTime,
    redact: { paths: ["req.headers.authorization", "headers.authorization", "authorization"], censor: "[redacted]" },
  };
  const forPeople = format === "pretty" || (format === "auto" && Boolean(process.stdout.isTTY));
  if (!forPeople) return pino(options);
  // In this thread, synchronously: a worker transport could lose the last lines when the process exits.
  return pino(
    options,
    pretty({ colorize: Boolean(process.stdout.isTTY), translateTime: "SYS:HH:MM:ss", ignore: "pid", sync: true }),
  );
}
