/** One uPlot line chart over time; recreated when its series change, resized with the page. */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface ChartSeries {
  label: string;
  color: string;
  values: (number | null)[];
}

export function Chart(props: { title: string; time: number[]; series: ChartSeries[] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const labels = props.series.map((s) => s.label).join(',');

  useEffect(() => {
    const el = box.current;
    if (el === null) return undefined;
    const opts: uPlot.Options = {
      title: props.title,
      width: Math.max(300, el.clientWidth),
      height: 220,
      scales: { x: { time: true } },
      series: [
        {},
        ...props.series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, spanGaps: true })),
      ],
      axes: [{}, { size: 50 }],
    };
    const u = new uPlot(opts, [props.time, ...props.series.map((s) => s.values)], el);
    plot.current = u;
    const resize = (): void => u.setSize({ width: Math.max(300, el.clientWidth), height: 220 });
    window.addEventListener('resize', resize);
    return () => {
      window.removeEventListener('resize', resize);
      u.destroy();
      plot.current = null;
    };
    // Recreated only when the set of series changes; new values go through setData below.
  }, [labels]);

  useEffect(() => {
    plot.current?.setData([props.time, ...props.series.map((s) => s.values)]);
  }, [props.time, props.series]);

  return <div class="chart" ref={box} data-chart={props.title} />;
}
