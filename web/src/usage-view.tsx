// The usage totals and charts (tokens: prompt and completion; requests) shared by the console's Usage tab and the
// playground.
import { TimeChart } from "./chart";
import { num } from "./format";
import type { UsagePoint, UsageTotals } from "./types";

/** The four totals; the total tokens in plain digits under `totalTestId` (the browser test reads it). */
export function Totals({ t, totalTestId }: { t: UsageTotals; totalTestId: string }) {
  return (
    <dl class="totals">
      <div>
        <dt>Total tokens</dt>
        <dd data-testid={totalTestId}>{String(t.total_tokens)}</dd>
      </div>
      <div>
        <dt>Prompt tokens</dt>
        <dd>{num(t.prompt_tokens)}</dd>
      </div>
      <div>
        <dt>Completion tokens</dt>
        <dd>{num(t.completion_tokens)}</dd>
      </div>
      <div>
        <dt>Requests</dt>
        <dd>{num(t.requests)}</dd>
      </div>
    </dl>
  );
}

export const colors = { prompt: "#2563eb", completion: "#16a34a", requests: "#9333ea" };

export function UsageCharts({ series, compact = false }: { series: UsagePoint[]; compact?: boolean }) {
  const x = series.map((p) => p.t);
  const height = compact ? 160 : 240;
  return (
    <div class="charts">
      <TimeChart
        title="Tokens"
        x={x}
        height={height}
        series={[
          { label: "Prompt tokens", color: colors.prompt, values: series.map((p) => p.prompt_tokens) },
          { label: "Completion tokens", color: colors.completion, values: series.map((p) => p.completion_tokens) },
        ]}
      />
      {!compact && (
        <TimeChart
          title="Requests"
          x={x}
          height={height}
          bars
          series={[{ label: "Requests", color: colors.requests, values: series.map((p) => p.requests) }]}
        />
      )}
    </div>
  );
}
