// The trend chart: tasks created and completed per bucket (left axis) and the bucket's
// productivity score (right axis, 0–100), drawn with the vendored uPlot. Series differ by dash
// pattern as well as colour. Dates are shown as the server sends them (UTC calendar days).

import { uPlot } from "./vendor.js";

const HEIGHT = 280;
const DAY_S = 86_400;
// Task counts are whole: ticks only at whole steps (never 0.5).
const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000];

/** "2024-03-01" -> seconds since the epoch at that day's UTC midnight. */
export function epochSeconds(day) {
  const [year, month, date] = day.split("-").map(Number);
  return Date.UTC(year, month - 1, date) / 1000;
}

const LABEL_PX = 64; // room one date label needs on the x axis, in CSS pixels
const LABELS = {
  DAY: new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", timeZone: "UTC" }),
  WEEK: new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", timeZone: "UTC" }),
  MONTH: new Intl.DateTimeFormat("en-GB", { month: "short", year: "numeric", timeZone: "UTC" }),
};

/** Ticks on the buckets themselves (never between two weeks or months), as many as fit,
 * always including the most recent. */
function bucketSplits(plot) {
  const xs = plot.data[0].slice(0, plot.buckets);
  const room = Math.max(1, Math.floor(plot.bbox.width / devicePixelRatio / LABEL_PX));
  const step = Math.ceil(xs.length / room);
  return xs.filter((_, index) => (xs.length - 1 - index) % step === 0);
}

const COMPACT_BELOW_PX = 480; // narrower: no axis titles, slimmer axes (a phone)

function options(width, chart) {
  const compact = width < COMPACT_BELOW_PX;
  return {
    width,
    height: HEIGHT,
    tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
    cursor: { points: { size: 8 } },
    legend: { live: true },
    scales: {
      x: { time: true },
      y: { range: (_, min, max) => [0, Math.max(2, max)] },
      score: { range: [0, 100] },
    },
    axes: [
      { stroke: "#1b2430", grid: { stroke: "#e3e7ed" }, ticks: { stroke: "#c7ced8" },
        splits: bucketSplits,
        values: (_, ticks) => ticks.map((t) => LABELS[chart.period].format(t * 1000)) },
      { label: compact ? null : "Tasks", size: compact ? 34 : 50, stroke: "#1b2430",
        grid: { stroke: "#e3e7ed" }, ticks: { stroke: "#c7ced8" }, incrs: WHOLE_STEPS,
        values: (_, ticks) => ticks },
      { scale: "score", label: compact ? null : "Score", size: compact ? 40 : 50, side: 1,
        stroke: "#1b2430", grid: { show: false }, ticks: { stroke: "#c7ced8" } },
    ],
    series: [
      { label: "From", value: (_, seconds) => seconds == null ? "–"
        : new Date(seconds * 1000).toISOString().slice(0, 10) },
      { label: "Created", stroke: "#1d4ed8", width: 2, points: { show: true, size: 5 } },
      { label: "Completed", stroke: "#046c4e", width: 2, dash: [8, 4],
        points: { show: true, size: 5 } },
      { label: "Score", scale: "score", stroke: "#8a4b00", width: 2, dash: [2, 3],
        value: (_, v) => v == null ? "–" : v.toFixed(1) },
    ],
  };
}

export class TrendChart {
  constructor(container) {
    this.container = container;
    this.plot = null;
    this.period = "DAY";
    new ResizeObserver(() => this.#resize()).observe(container);
  }

  /** Draw a `Trends` answer (`points` oldest first). */
  update(trends) {
    const points = trends.points;
    const data = [
      points.map((p) => epochSeconds(p.date)),
      points.map((p) => p.tasksCreated),
      points.map((p) => p.tasksCompleted),
      points.map((p) => p.productivityScore),
    ];
    this.period = trends.period;
    if (data[0].length === 1) data[0].push(data[0][0] + DAY_S); // uPlot needs a span
    for (const series of data.slice(1)) if (series.length < data[0].length) series.push(null);
    if (this.plot === null) {
      this.plot = new uPlot(options(this.#width(), this), data, this.container);
    }
    this.plot.buckets = points.length; // the padding point of a single bucket gets no tick
    this.plot.setData(data);
  }

  #width() {
    return Math.max(200, Math.floor(this.container.clientWidth));
  }

  #resize() {
    if (!this.plot || this.container.clientWidth === 0) return;
    const width = this.#width();
    if ((width < COMPACT_BELOW_PX) !== (this.plot.width < COMPACT_BELOW_PX)) {
      const data = this.plot.data; // the axes change: a new plot
      const buckets = this.plot.buckets;
      this.plot.destroy();
      this.plot = new uPlot(options(width, this), data, this.container);
      this.plot.buckets = buckets;
      return;
    }
    this.plot.setSize({ width, height: HEIGHT });
  }
}
