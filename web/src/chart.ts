import uPlot from 'uplot';
import { emotionColor } from './dom';
import { mainFace, personOf, smoothedOf, type Face, type Frame } from './types';

/** Which face the chart follows: the main (largest) face of each frame, or one person. */
export type Person = 'main' | number;

/**
 * One row per emotion: its probability at each frame for the chosen person, `null` where the
 * person is not seen. The smoothed series (per person, over time) unless `raw`, the model's output.
 */
export function emotionSeries(frames: Frame[], labels: string[], person: Person, raw = false): uPlot.AlignedData {
  const times = frames.map((f) => f.video_timestamp_sec);
  const faces: (Face | null)[] = frames.map((f) =>
    person === 'main' ? mainFace(f) : (f.faces.find((face) => personOf(face) === person) ?? null));
  const scores = faces.map((face) => (face ? (raw ? face.emotions : smoothedOf(face)) : null));
  const rows = labels.map((label) => scores.map((s) => s?.[label] ?? null));
  return [times, ...rows];
}

/**
 * The emotion timeline: a line per emotion over the video's time, with a playhead at `playhead()`.
 * Clicking the plot calls `onSeek` with the clicked time.
 */
export function timelineChart(
  container: HTMLElement,
  labels: string[],
  data: uPlot.AlignedData,
  playhead: () => number,
  onSeek: (seconds: number) => void,
): uPlot {
  const drawPlayhead = (u: uPlot) => {
    const x = Math.round(u.valToPos(playhead(), 'x', true));
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = '#222';
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.restore();
  };
  const resize = new ResizeObserver(() => {
    const width = Math.max(container.clientWidth, 300);
    if (width !== chart.width) chart.setSize({ width, height: 260 });
  });
  const chart = new uPlot(
    {
      width: Math.max(container.clientWidth, 300),
      height: 260,
      scales: { x: { time: false }, y: { range: [0, 1] } },
      axes: [
        { label: 'seconds', values: (_u, ticks) => ticks.map((t) => `${t}s`) },
        { label: 'probability', size: 50 },
      ],
      series: [
        { label: 'time', value: (_u, v) => (v == null ? '' : `${v.toFixed(2)} s`) },
        ...labels.map((label) => ({
          label,
          stroke: emotionColor(label),
          width: 2,
          spanGaps: false,
          value: (_u: uPlot, v: number | null) => (v == null ? '–' : `${Math.round(v * 100)}%`),
        })),
      ],
      hooks: { draw: [drawPlayhead], destroy: [() => resize.disconnect()] },
    },
    data,
    container,
  );
  chart.over.addEventListener('click', () => {
    const left = chart.cursor.left;
    if (left != null && left >= 0) onSeek(chart.posToVal(left, 'x'));
  });
  resize.observe(container);
  return chart;
}
