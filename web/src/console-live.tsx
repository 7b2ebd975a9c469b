// The console's Live tab: each model's state and load, and the recent errors; refreshed every 2 s while open.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "./api";
import { dec, duration, num, timeMs } from "./format";
import { ErrorText } from "./layout";
import type { LiveView } from "./types";

const everyMs = 2000;

export function LiveTab() {
  const [live, setLive] = useState<LiveView | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const v = await api<LiveView>("/console/api/live");
        if (stopped) return;
        setLive(v);
        setError(null);
      } catch (e) {
        if (stopped) return;
        setError(errorText(e));
      }
      timer = setTimeout(() => void tick(), everyMs);
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, []);

  return (
    <div>
      <ErrorText text={error} />
      {live && (
        <p class="muted">
          Up {duration(live.uptime_s)} · memory {dec(live.rss_mb)} MB · refreshed every 2 s
        </p>
      )}
      <h2>Models</h2>
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th>Model</th>
              <th>Status</th>
              <th class="num">Busy / sequences</th>
              <th class="num">Queue</th>
              <th class="num" title="Completion tokens delivered per second, over the last minute">
                Tokens/s (last min)
              </th>
              <th class="num">Requests (last min)</th>
            </tr>
          </thead>
          <tbody>
            {live?.models.map((m) => (
              <tr key={m.id} data-testid="live-model" data-model-id={m.id}>
                <td>
                  <code>{m.id}</code>
                </td>
                <td>
                  <span class={`badge badge-${m.status}`}>{m.status}</span>
                </td>
                <td class="num">
                  {num(m.busy)} / {num(m.sequences)}
                </td>
                <td class="num">{num(m.waiting)}</td>
                <td class="num">{dec(m.tokens_per_second)}</td>
                <td class="num">{num(m.requests_last_minute)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h2>Recent errors</h2>
      <div class="table-wrap">
        <table data-testid="recent-errors">
          <thead>
            <tr>
              <th>Time</th>
              <th>Status</th>
              <th>Request</th>
              <th>Model</th>
              <th>Key</th>
              <th>Request id</th>
            </tr>
          </thead>
          <tbody>
            {live && live.recent_errors.length === 0 && (
              <tr>
                <td colSpan={6} class="muted">
                  No errors recently.
                </td>
              </tr>
            )}
            {live?.recent_errors.map((e, i) => (
              <tr key={`${e.request_id ?? ""}-${e.time}-${i}`} data-status={e.status}>
                <td>{timeMs(e.time)}</td>
                <td>
                  <span class="badge badge-error">{e.status}</span>
                </td>
                <td>
                  <code>
                    {e.method} {e.route}
                  </code>
                </td>
                <td>{e.model ?? "–"}</td>
                <td>{e.key_id ?? "–"}</td>
                <td>
                  <code>{e.request_id ?? "–"}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
