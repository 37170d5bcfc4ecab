// The web view's charts: reads the JSON the page carries (#data) and draws with uPlot. No network access.
import uPlot from "uplot";

const BUCKETS_PER_OCTAVE = 8; // collector/rollup.py: latency buckets are 2^(b/8) ns

function heatColor(f) {
  const hue = 220 - 220 * f;
  return `hsla(${hue}, 80%, 50%, ${0.25 + 0.75 * f})`;
}

function heatmap(el, panel, bucketS, xRange) {
  const xs = panel.t.map((t) => t / 1e9);
  const cells = panel.cells; // [t_ns, lat_bucket, count]
  const maxCount = Math.max(1, ...cells.map((c) => c[2]));
  const drawCells = (u) => {
    const ctx = u.ctx;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    for (const [t, b, n] of cells) {
      const x0 = u.valToPos(t / 1e9, "x", true), x1 = u.valToPos(t / 1e9 + bucketS, "x", true);
      const lo = Math.pow(2, b / BUCKETS_PER_OCTAVE) / 1e9, hi = Math.pow(2, (b + 1) / BUCKETS_PER_OCTAVE) / 1e9;
      const y0 = u.valToPos(hi, "y", true), y1 = u.valToPos(lo, "y", true);
      ctx.fillStyle = heatColor(Math.log(1 + n) / Math.log(1 + maxCount));
      ctx.fillRect(x0, y0 - 1, Math.max(1, x1 - x0 - 1), Math.max(4, y1 - y0 + 2));
    }
    ctx.restore();
  };
  const opts = {
    title: panel.label, width: Math.min(1100, window.innerWidth - 60), height: 260,
    scales: { x: { time: true, range: xRange }, y: { distr: 3, range: [panel.ymin, panel.ymax] } },
    axes: [{}, { size: 64, values: (u, vals) => vals.map((v) => fmtS(v)) }],
    series: [{}, { label: "p50", stroke: "#111", width: 2 }, { label: "p99", stroke: "#c00", width: 2 }],
    hooks: { drawClear: [drawCells] },
  };
  new uPlot(opts, [xs, panel.p50.map((v) => (v == null ? null : v / 1e9)),
                   panel.p99.map((v) => (v == null ? null : v / 1e9))], el);
}

function lines(el, chart) {
  const colors = ["#c00", "#06c", "#080", "#a60", "#808", "#088", "#444", "#c60"];
  const series = [{}].concat(chart.series.map((s, i) => ({ label: s.label, stroke: colors[i % colors.length], width: 2 })));
  new uPlot({ title: chart.title, width: Math.min(1100, window.innerWidth - 60), height: 220,
              scales: { x: { time: true } }, series },
            [chart.t.map((t) => t / 1e9)].concat(chart.series.map((s) => s.values)), el);
}

function fmtS(s) {
  if (s == null) return "";
  if (s >= 1) return s.toFixed(s >= 10 ? 0 : 1) + "s";
  if (s >= 1e-3) return (s * 1e3).toFixed(0) + "ms";
  return (s * 1e6).toFixed(0) + "µs";
}

function main() {
  const holder = document.getElementById("data");
  if (!holder) return;
  const data = JSON.parse(holder.textContent);
  const root = document.getElementById("charts");
  for (const panel of data.heatmaps || []) {
    const el = document.createElement("div");
    el.className = "chart heatmap";
    root.appendChild(el);
    heatmap(el, panel, data.bucket_s, [data.xmin, data.xmax]);
  }
  for (const chart of data.lines || []) {
    const el = document.createElement("div");
    el.className = "chart lines";
    root.appendChild(el);
    lines(el, chart);
  }
  document.body.dataset.rendered = "yes";
}

// Empty filter fields stay out of the URL, so a pasted link carries only what was asked.
document.addEventListener("submit", (ev) => {
  for (const input of ev.target.querySelectorAll("input, select")) if (!input.value) input.disabled = true;
});
main();
