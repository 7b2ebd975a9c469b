import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import type { ServingRun } from "./serving.js";

interface Point {
  server: string;
  rate: number;
  panel: string;
  stat: string;
  value: number;
}

/** Each panel's figures; a panel with more than one (TTFT p50 and p90) draws them with different dashes. */
const PANELS: { title: string; pick: (r: ServingRun) => [stat: string, value: number][]; dashed?: boolean }[] = [
  { title: "Completion tokens/s", pick: (r) => [["all", r.output_tok_s]] },
  {
    title: "Time to first token (s)",
    pick: (r) => [
      ["p50", r.ttft_ms.p50 / 1000],
      ["p90", r.ttft_ms.p90 / 1000],
    ],
    dashed: true,
  },
  { title: "Time per output token, p50 (ms)", pick: (r) => [["p50", r.tpot_ms.p50]] },
  { title: "Goodput (req/s)", pick: (r) => [["all", r.goodput_req_s]] },
];

/**
 * The serving sweep as an SVG: request rate across (log scale, the rates measured as ticks), a line per server,
 * one panel per figure (tokens/s, TTFT p50 and p90, TPOT p50, goodput). Rendered by Vega without a browser.
 */
export async function servingPlotSvg(runs: readonly ServingRun[], subtitle: string | string[]): Promise<string> {
  const points: Point[] = runs.flatMap((r) =>
    PANELS.flatMap((p) =>
      p.pick(r).map(([stat, value]) => ({ server: r.server, rate: r.rate, panel: p.title, stat, value })),
    ).filter((pt) => Number.isFinite(pt.value)),
  );
  const rates = [...new Set(runs.map((r) => r.rate))].sort((a, b) => a - b);
  const servers = [...new Set(runs.map((r) => r.server))];
  const spec: TopLevelSpec = {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: "Open-loop serving: Poisson arrivals", subtitle },
    data: { values: points as unknown as Record<string, unknown>[] },
    columns: 2,
    concat: PANELS.map((p) => ({
      title: p.title,
      width: 280,
      height: 170,
      transform: [{ filter: { field: "panel", equal: p.title } }],
      mark: { type: "line", point: true },
      encoding: {
        x: {
          field: "rate",
          type: "quantitative",
          title: "request rate (req/s)",
          scale: { type: "log", base: 2 },
          axis: { values: rates },
        },
        y: { field: "value", type: "quantitative", title: null },
        color: { field: "server", type: "nominal", title: "server", scale: { domain: servers } },
        ...(p.dashed
          ? {
              strokeDash: {
                field: "stat",
                type: "nominal",
                title: "percentile",
                legend: {
                  symbolType: "stroke",
                  symbolStrokeWidth: 2,
                  encode: { symbols: { update: { stroke: { value: "#444" } } } },
                },
              },
            }
          : {}),
      },
    })),
    config: { font: "sans-serif", background: "white" },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  return view.toSVG();
}
