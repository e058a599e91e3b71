// The dashboard's charts, hand-drawn in SVG (no library): line charts
// with labelled axes. Loaded before dashboard.js, which calls lineChart.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
function el(name, attrs, text) {
  const n = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Lines of `series` ({name, points: [[unix ms, value]]}) over the
// `historyS` seconds before `now`, with labelled axes: x in seconds
// before now, y from 0 to a round number above the highest point.
function lineChart(svg, series, yLabel, now, historyS) {
  const W = 600, H = 220, L = 72, R = 20, T = 22, B = 38;
  const ymax = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1]))));
  const x = (t) => L + (W - L - R) * (1 - (now - t) / (historyS * 1000));
  const y = (v) => T + (H - T - B) * (1 - v / ymax);
  const nodes = [];
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    nodes.push(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    nodes.push(el("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, v >= 100 ? v.toFixed(0) : +v.toPrecision(3)));
  }
  for (let s = 0; s <= historyS; s += 60) {
    const px = x(now - s * 1000);
    nodes.push(el("line", { x1: px, x2: px, y1: H - B, y2: H - B + 4, class: "axis" }));
    nodes.push(el("text", { x: px, y: H - B + 15, "text-anchor": "middle" }, s === 0 ? "now" : `-${s}`));
  }
  nodes.push(el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  nodes.push(el("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  nodes.push(el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "time (seconds before now)"));
  nodes.push(el("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})` }, yLabel));
  series.forEach((s, i) => {
    const d = s.points.filter((p) => p[1] !== null)
      .map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    if (d) nodes.push(el("path", { d, class: `s${i}` }));
    nodes.push(el("rect", { x: L + 8 + i * 90, y: 6, width: 10, height: 10, class: `legend${i}` }));
    nodes.push(el("text", { x: L + 22 + i * 90, y: 15 }, s.name));
  });
  svg.replaceChildren(...nodes);
}
