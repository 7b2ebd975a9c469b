// The usage charts (tokens: prompt and completion; requests) shared by the console's Usage tab and the playground.
import { TimeChart } from "./chart";
import type { UsagePoint } from "./types";

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
