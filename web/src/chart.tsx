// A uPlot time-series chart as a Preact component: x in unix seconds, one line per series; resizes with its box.
// Times are drawn in UTC: the server's buckets are UTC hours and days, and a day drawn in local time would sit
// under the wrong date west of Greenwich (and hours at :30 in half-hour zones).
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface ChartSeries {
  label: string;
  color: string;
  values: number[];
}

interface Props {
  title: string;
  x: number[];
  series: ChartSeries[];
  height?: number;
  /** Draw bars instead of lines (counts per bucket). */
  bars?: boolean;
}

function fill(color: string): string {
  return color + "22";
}

export function TimeChart({ title, x, series, height = 220, bars = false }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shapeKey = `${title}|${bars}|${height}|${series.map((s) => `${s.label}:${s.color}`).join(",")}`;
  const data: uPlot.AlignedData = [x, ...series.map((s) => s.values)];

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const barPaths = bars ? uPlot.paths.bars?.({ size: [0.7, 40] }) : undefined;
    const opts: uPlot.Options = {
      title,
      width: Math.max(280, el.clientWidth),
      height,
      series: [
        {},
        ...series.map((s): uPlot.Series => ({
          label: s.label,
          stroke: s.color,
          fill: fill(s.color),
          width: 2,
          paths: barPaths,
          points: { show: false },
        })),
      ],
      axes: [{}, { size: 70 }],
      scales: { y: { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max)] } },
      cursor: { drag: { x: false, y: false } },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    };
    const u = new uPlot(opts, data, el);
    plot.current = u;
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(280, el.clientWidth), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
    // The chart is rebuilt only when its shape changes; new data goes through setData below.
  }, [shapeKey]);

  useEffect(() => {
    plot.current?.setData(data);
  });

  return <div class="chart" ref={box} />;
}
