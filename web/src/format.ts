// Small formatting helpers shared by the pages.

const numberFormat = new Intl.NumberFormat();

/** A count with thousands separators (for reading; test hooks use plain digits instead). */
export function num(n: number | null | undefined): string {
  return n === null || n === undefined ? "–" : numberFormat.format(n);
}

/** A number with at most one decimal. */
export function dec(n: number): string {
  return numberFormat.format(Math.round(n * 10) / 10);
}

/** A limit: the number, or "unlimited" for null. */
export function limit(n: number | null | undefined): string {
  return n === null || n === undefined ? "unlimited" : numberFormat.format(n);
}

/** Unix seconds as a local date and time. */
export function dateTime(unixS: number | null | undefined): string {
  if (unixS === null || unixS === undefined) return "–";
  return new Date(unixS * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** Unix seconds as a UTC date and time, as the usage buckets are cut ("Dec 4, 2026, 12:00 PM UTC"). */
export function dateTimeUtc(unixS: number): string {
  const text = new Date(unixS * 1000).toLocaleString(undefined, {
    dateStyle: "medium",
    timeStyle: "short",
    timeZone: "UTC",
  });
  return `${text} UTC`;
}

/** Unix milliseconds as a local time with seconds. */
export function timeMs(unixMs: number): string {
  return new Date(unixMs).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** Seconds as "3 d 4 h", "5 h 2 min", "42 s". */
export function duration(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s)} s`;
}

/** A key's model list as text: "all models" for null. */
export function modelList(models: string[] | string | null | undefined): string {
  if (models === null || models === undefined) return "all models";
  const list = Array.isArray(models) ? models : models.split(",");
  const ids = list.map((m) => m.trim()).filter(Boolean);
  return ids.length ? ids.join(", ") : "all models";
}

/** The models field as an input's value: "" for all. */
export function modelInput(models: string[] | string | null | undefined): string {
  return models === null || models === undefined ? "" : Array.isArray(models) ? models.join(", ") : models;
}
