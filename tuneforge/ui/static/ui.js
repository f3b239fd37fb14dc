// Live progress and loss curves for the run page: polls /api/runs/<name>/progress and redraws an
// inline SVG chart (no library, no network beyond this server). Past runs get their whole curve at once.
const W = 820, H = 260, PAD = 40, LEGEND = 200;  // the legend sits right of the plot, never over it
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// series: {label: [[x, y], ...]}; draws axes, one polyline (and dots) per series, and a legend.
export function drawChart(box, series) {
  const all = Object.values(series).flat();
  box.replaceChildren();
  if (!all.length) { box.textContent = "no loss points yet"; return; }
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const R = W - LEGEND;  // the plot's right edge
  const sx = x => PAD + (x - x0) / (x1 - x0) * (R - PAD);
  const sy = y => H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD);
  const svg = el("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img"});
  svg.append(el("line", {x1: PAD, y1: H - PAD, x2: R, y2: H - PAD, stroke: "#999"}));
  svg.append(el("line", {x1: PAD, y1: PAD, x2: PAD, y2: H - PAD, stroke: "#999"}));
  svg.append(el("text", {x: PAD, y: H - PAD + 16, "font-size": 11}, String(x0)));
  svg.append(el("text", {x: R, y: H - PAD + 16, "font-size": 11, "text-anchor": "end"}, `step ${x1}`));
  svg.append(el("text", {x: 2, y: PAD + 4, "font-size": 11}, y1.toFixed(3)));
  svg.append(el("text", {x: 2, y: H - PAD, "font-size": 11}, y0.toFixed(3)));
  Object.entries(series).forEach(([label, pts], i) => {
    const color = COLORS[i % COLORS.length];
    const sorted = [...pts].sort((a, b) => a[0] - b[0]);
    svg.append(el("polyline", {points: sorted.map(p => `${sx(p[0])},${sy(p[1])}`).join(" "),
                                fill: "none", stroke: color, "stroke-width": 1.5, class: "series"}));
    for (const p of sorted) svg.append(el("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color, class: "point"}));
    svg.append(el("text", {x: R + 12, y: PAD + 14 * i, "font-size": 12, fill: color, class: "legend"}, `${label} loss`));
  });
  box.append(svg);
  box.dataset.points = String(all.length);
}

// One curve per split, and per split and task for a mixture's per-task rows: "train (sentiment)".
export function curveName(pt) {
  return pt.task ? `${pt.split} (${pt.task})` : pt.split;
}

function fmtProgress(p) {
  const parts = [p.status];
  if (p.step != null) parts.push(`step ${p.step}${p.total ? " of " + p.total : ""}`);
  if (p.loss != null) parts.push(`loss ${p.loss.toFixed(4)}`);
  if (p.tokens_per_s != null) parts.push(`${Math.round(p.tokens_per_s)} tokens/s`);
  if (p.eta_s != null) parts.push(`ETA ${Math.floor(p.eta_s / 60)}m${String(p.eta_s % 60).padStart(2, "0")}s`);
  return parts.join(" · ");
}

async function follow(box) {
  const name = box.dataset.run, series = {};
  let next = 0;
  const status = document.getElementById("status"), progress = document.getElementById("progress");
  const log = document.getElementById("log");
  for (;;) {
    let p;
    try {
      const r = await fetch(`/api/runs/${encodeURIComponent(name)}/progress?after=${next}`, {credentials: "same-origin"});
      if (!r.ok) break;
      p = await r.json();
    } catch (e) { await new Promise(ok => setTimeout(ok, 2000)); continue; }
    next = p.next;
    for (const pt of p.points) (series[curveName(pt)] ||= []).push([pt.step, pt.loss]);
    if (p.points.length || !box.dataset.points) drawChart(box, series);
    status.textContent = p.status; status.className = `status status-${p.status}`;
    document.getElementById("stop").hidden = p.status !== "running";
    document.getElementById("resume").hidden = ["running", "finished"].includes(p.status);
    progress.textContent = fmtProgress(p);
    if (p.log) log.textContent = p.log;
    if (p.status !== "running") break;
    await new Promise(ok => setTimeout(ok, 1000));
  }
}

const box = document.getElementById("chart");
if (box) follow(box);

// Answers side by side: a few at first, "Show more" reveals the next ones (all already in the page).
const more = document.getElementById("more-examples");
if (more) more.addEventListener("click", () => {
  const hidden = [...document.querySelectorAll("#examples .example[hidden]")];
  const step = Number(document.getElementById("examples").dataset.more);
  hidden.slice(0, step).forEach(e => { e.hidden = false; });
  const all = document.querySelectorAll("#examples .example").length;
  document.getElementById("examples-count").textContent =
    `${all - document.querySelectorAll("#examples .example[hidden]").length} of ${all}`;
  if (hidden.length <= step) more.hidden = true;
});
