/*
 * The service page's traffic charts: stats loaded from the API and drawn as
 * SVG bars and lines, with a caption that says the numbers in words.
 */

import { el, fill, fmtMs, fmtRate, setText, svgEl } from "./dom.js";
import { api, errorText, isAbort, session, view } from "./api.js";

const CHART_W = 300;
const CHART_H = 100;

// ---------------------------------------------------------------- charts

export function buildCharts(p) {
  p.charts = {};
  const chart = (id, label) => {
    const svg = svgEl(
      "svg",
      {
        id,
        class: "chart",
        viewBox: "0 0 " + CHART_W + " " + CHART_H,
        role: "img",
        "aria-label": label,
        "aria-labelledby": id + "-title",
      },
      svgEl("title", { id: id + "-title" }, label),
    );
    const caption = el("figcaption", { id: id + "-caption" }, label);
    p.charts[id] = { svg, caption };
    return el("figure", { class: "chart-figure" }, svg, caption);
  };
  p.statsError = el("p", { id: "stats-error", class: "msg error", role: "alert" });
  return el(
    "section",
    { id: "traffic", "aria-labelledby": "traffic-title" },
    el("h2", { id: "traffic-title" }, "Traffic, last 10 minutes"),
    p.statsError,
    el(
      "div",
      { class: "charts" },
      chart("chart-requests", "Requests per second, last 10 minutes"),
      chart("chart-errors", "Errors (5xx) per second, last 10 minutes"),
      chart("chart-latency", "Latency p50 and p95 in milliseconds, last 10 minutes"),
    ),
  );
}

export async function loadStats(p) {
  const gen = view.gen;
  try {
    const stats = await api("GET", p.base + "/stats");
    if (gen !== view.gen) return;
    setText(p.statsError, "");
    drawCharts(p, stats || {});
  } catch (e) {
    if (gen === view.gen && session.me && !isAbort(e)) setText(p.statsError, errorText(e));
  }
}

/** Removes everything but the <title>, then draws the x axis. */
function clearChart(svg) {
  for (const child of Array.from(svg.childNodes)) {
    if (child.nodeName !== "title") child.remove();
  }
  svg.appendChild(svgEl("line", { class: "chart-axis", x1: 0, y1: CHART_H - 0.5, x2: CHART_W, y2: CHART_H - 0.5 }));
}

function lastNumber(list) {
  for (let i = list.length - 1; i >= 0; i--) if (typeof list[i] === "number") return list[i];
  return null;
}

function drawBars(svg, values, cls) {
  clearChart(svg);
  const n = values.length;
  if (!n) return;
  const max = Math.max(0, ...values);
  const w = CHART_W / n;
  const g = svgEl("g", { class: cls });
  values.forEach((v, i) => {
    if (!(v > 0) || !(max > 0)) return;
    const h = Math.max(1, (v / max) * (CHART_H - 4));
    g.appendChild(
      svgEl("rect", {
        x: (i * w + w * 0.1).toFixed(2),
        y: (CHART_H - h).toFixed(2),
        width: Math.max(0.5, w * 0.8).toFixed(2),
        height: h.toFixed(2),
      }),
    );
  });
  svg.appendChild(g);
}

/** Lines with gaps where a window had no value; a lone value shows as a dot. */
function drawLines(svg, series) {
  clearChart(svg);
  const all = series.flatMap((s) => s.values).filter((v) => typeof v === "number");
  const max = Math.max(0, ...all);
  if (!(max > 0)) return;
  for (const s of series) {
    const n = s.values.length;
    let d = "";
    let open = false;
    s.values.forEach((v, i) => {
      if (typeof v !== "number") {
        open = false;
        return;
      }
      const x = (n === 1 ? CHART_W / 2 : (i * CHART_W) / (n - 1)).toFixed(2);
      const y = (CHART_H - 2 - (v / max) * (CHART_H - 6)).toFixed(2);
      const next = s.values[i + 1];
      if (!open) d += "M" + x + " " + y + (typeof next === "number" ? "" : "l0.01 0");
      else d += "L" + x + " " + y;
      open = true;
    });
    if (d) svg.appendChild(svgEl("path", { class: s.cls, d }));
  }
}

function drawCharts(p, stats) {
  const points = Array.isArray(stats.points) ? stats.points : [];
  const step = stats.step_seconds > 0 ? stats.step_seconds : 10;
  const req = points.map((x) => (x.requests || 0) / step);
  const err = points.map((x) => (x.errors || 0) / step);
  const p50 = points.map((x) => (typeof x.p50_ms === "number" ? x.p50_ms : null));
  const p95 = points.map((x) => (typeof x.p95_ms === "number" ? x.p95_ms : null));

  // The newest window is still filling: rates are read from the one before.
  const full = Math.max(0, points.length - 2);
  const recent = "over the last " + step + " s";

  drawBars(p.charts["chart-requests"].svg, req, "bars bars-requests");
  setText(
    p.charts["chart-requests"].caption,
    "Requests: " + fmtRate(req[full]) + " " + recent + ", peak " + fmtRate(Math.max(0, ...req)),
  );

  drawBars(p.charts["chart-errors"].svg, err, "bars bars-errors");
  const last = points[full];
  const share = last && last.requests ? Math.round((100 * (last.errors || 0)) / last.requests) + "% of requests" : "no requests";
  setText(p.charts["chart-errors"].caption, "Errors (5xx): " + fmtRate(err[full]) + " " + recent + " (" + share + ")");

  drawLines(p.charts["chart-latency"].svg, [
    { values: p95, cls: "line line-p95" },
    { values: p50, cls: "line line-p50" },
  ]);
  const l50 = lastNumber(p50);
  const l95 = lastNumber(p95);
  fill(
    p.charts["chart-latency"].caption,
    "Latency: ",
    el("span", { class: "swatch swatch-p50" }),
    "p50 " + fmtMs(l50) + ", ",
    el("span", { class: "swatch swatch-p95" }),
    "p95 " + fmtMs(l95) + (l50 === null && l95 === null ? " (no requests)" : " latest"),
  );
}
