/* The monitor demo: one tile per figure the server pushes, each with a hand-drawn SVG chart. */
"use strict";

const POINTS = 60; // a minute of history at one push a second
const FIGURES = [
  {key: "connections", title: "Connections", unit: ""},
  {key: "messages_per_second", title: "Messages sent", unit: "/s"},
  {key: "loop_lag_ms", title: "Event-loop lag", unit: "ms"},
  {key: "rss_mb", title: "Memory (RSS)", unit: "MB"},
];
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 300;
const HEIGHT = 70;

function tile(figure) {
  const chart = document.createElementNS(SVG, "svg");
  chart.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  chart.setAttribute("preserveAspectRatio", "none");
  chart.setAttribute("role", "img");
  chart.setAttribute("aria-label", `${figure.title} over the last minute`);
  const baseline = document.createElementNS(SVG, "line");
  for (const [name, value] of Object.entries({x1: 0, y1: HEIGHT - 1, x2: WIDTH, y2: HEIGHT - 1})) {
    baseline.setAttribute(name, value);
  }
  const path = document.createElementNS(SVG, "path");
  chart.append(baseline, path);
  const value = Demo.el("span", {class: "value"}, "–");
  const element = Demo.el("section", {class: "panel tile", "data-figure": figure.key},
    Demo.el("h2", {}, figure.title), value, Demo.el("span", {class: "unit"}, figure.unit), chart);
  return {element, value, path, points: []};
}

/** The path through ``points``: zero at the bottom, the largest at the top, the newest at the right.
 *  Fewer points than a minute's are spread over the whole width, so a new page draws at once. */
function line(points) {
  const drawn = points.length === 1 ? [points[0], points[0]] : points; // one point: a level line
  const top = Math.max(...drawn, 1e-9);
  const step = WIDTH / (drawn.length - 1);
  return drawn.map((point, index) => {
    const x = (index * step).toFixed(1);
    const y = (HEIGHT - 2 - (point / top) * (HEIGHT - 6)).toFixed(1);
    return `${index === 0 ? "M" : "L"}${x} ${y}`;
  }).join(" ");
}

async function main() {
  const config = await Demo.config();
  const tiles = new Map(FIGURES.map((figure) => [figure.key, tile(figure)]));
  document.getElementById("tiles").append(...[...tiles.values()].map((t) => t.element));
  const client = Demo.connect(config);
  let node = null; // with several processes each publishes its own: follow the first one heard
  client.subscribe(config.channels.monitor).bind("figures", (figures) => {
    node = node === null ? figures.node : node;
    if (figures.node !== node) return;
    document.getElementById("source").textContent =
      `Process node ${figures.node} at ${Demo.clock(figures.time)}, ${figures.watchers} watching this page`;
    for (const [key, t] of tiles) {
      const point = figures[key];
      t.value.textContent = point === null ? "n/a" : point;
      t.points = t.points.concat(point === null ? [] : [point]).slice(-POINTS);
      t.path.setAttribute("d", line(t.points));
      t.element.dataset.points = t.points.length;
    }
  });
}

main();
