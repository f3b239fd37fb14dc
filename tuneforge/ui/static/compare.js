// Compare page: every ticked run's train and validation loss curves overlaid on one chart.
import {curveName, drawChart} from "./ui.js";

const box = document.getElementById("overlay");
const series = {};
for (const name of box.dataset.runs.split(",")) {
  const r = await fetch(`/api/runs/${encodeURIComponent(name)}/progress`, {credentials: "same-origin"});
  if (!r.ok) continue;
  for (const pt of (await r.json()).points) (series[`${name} ${curveName(pt)}`] ||= []).push([pt.step, pt.loss]);
}
drawChart(box, series);
