/*
 * The service page's charts: stats loaded from the API and drawn as SVG
 * bars and lines on axes with units, each with a caption that says the
 * numbers in words. Every service has memory and CPU; a web service also
 * has requests, errors and latency.
 */

import { el, fill, fmtBytes, fmtMs, fmtRate, setText, svgEl } from "./dom.js";
import { api, errorText, isAbort, session, view } from "./api.js";

const CHART_W = 320;
const CHART_H = 120;
/** The plot area inside the chart: room on the left for the y labels, below for the x labels. */
const PLOT = { left: 44, right: 316, top: 8, bottom: 100 };
const MIB = 1024 * 1024;

// ---------------------------------------------------------------- scales

/** The smallest 1, 2 or 5 times a power of ten at or above max(v, floor): an axis top that reads well. */
export function niceMax(v, floor) {
  const m = Math.max(Number.isFinite(v) ? v : 0, floor);
  const pow = Math.pow(10, Math.floor(Math.log10(m)));
  for (const f of [1, 2, 5, 10]) if (f * pow >= m - 1e-12) return f * pow;
  return 10 * pow;
}

function yOf(v, top) {
  const h = PLOT.bottom - PLOT.top;
  return PLOT.bottom - (Math.min(v, top) / top) * h;
}

// ---------------------------------------------------------------- building

export function buildCharts(p, web) {
  p.charts = {};
  const chart = (id, label) => {
    const svg = svgEl(
      "svg",
      {
        id,
        class: "chart",
        viewBox: "0 0 " + CHART_W + " " + CHART_H,
        role: "img",
        "aria-labelledby": id + "-title " + id + "-caption",
      },
      svgEl("title", { id: id + "-title" }, label),
    );
    const caption = el("figcaption", { id: id + "-caption" }, label);
    p.charts[id] = { svg, caption };
    return el("figure", { class: "chart-figure" }, svg, caption);
  };
  p.statsError = el("p", { id: "stats-error", class: "msg error", role: "alert" });
  const charts = [];
  if (web) {
    charts.push(
      chart("chart-requests", "Requests per second, last 10 minutes"),
      chart("chart-errors", "Errors (5xx) per second, on the requests' scale, last 10 minutes"),
      chart("chart-latency", "Latency p50 and p95 in milliseconds, last 10 minutes"),
    );
  }
  charts.push(
    chart("chart-memory", "Memory held by its instances, last 10 minutes"),
    chart("chart-cpu", "CPU used by its instances, in percent of one core, last 10 minutes"),
  );
  return el(
    "section",
    { id: "traffic", "aria-labelledby": "traffic-title" },
    el("h2", { id: "traffic-title" }, web ? "Traffic and usage, last 10 minutes" : "Usage, last 10 minutes"),
    p.statsError,
    el("div", { class: "charts" }, charts),
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

// ---------------------------------------------------------------- drawing

/** Removes everything but the <title>, then draws both axes with the y axis's top and the time span. */
function clearChart(svg, top, format) {
  for (const child of Array.from(svg.childNodes)) {
    if (child.nodeName !== "title") child.remove();
  }
  const label = (x, y, text, anchor) =>
    svgEl("text", { class: "chart-label", x, y, "text-anchor": anchor }, text);
  const mid = top / 2;
  svg.append(
    svgEl("line", { class: "chart-grid", x1: PLOT.left, y1: yOf(mid, top), x2: PLOT.right, y2: yOf(mid, top) }),
    svgEl("line", { class: "chart-grid", x1: PLOT.left, y1: PLOT.top, x2: PLOT.right, y2: PLOT.top }),
    svgEl("line", { class: "chart-axis", x1: PLOT.left, y1: PLOT.bottom, x2: PLOT.right, y2: PLOT.bottom }),
    svgEl("line", { class: "chart-axis", x1: PLOT.left, y1: PLOT.top, x2: PLOT.left, y2: PLOT.bottom }),
    label(PLOT.left - 4, PLOT.top + 4, format(top), "end"),
    label(PLOT.left - 4, yOf(mid, top) + 4, format(mid), "end"),
    label(PLOT.left - 4, PLOT.bottom + 3, format(0), "end"),
    label(PLOT.left, CHART_H - 4, "10 min ago", "start"),
    label(PLOT.right, CHART_H - 4, "now", "end"),
  );
}

function drawBars(svg, values, top, cls) {
  const n = values.length;
  if (!n) return;
  const w = (PLOT.right - PLOT.left) / n;
  const g = svgEl("g", { class: cls });
  values.forEach((v, i) => {
    if (!(v > 0)) return;
    const y = Math.min(yOf(v, top), PLOT.bottom - 1);
    g.appendChild(
      svgEl("rect", {
        x: (PLOT.left + i * w + w * 0.1).toFixed(2),
        y: y.toFixed(2),
        width: Math.max(0.5, w * 0.8).toFixed(2),
        height: (PLOT.bottom - y).toFixed(2),
      }),
    );
  });
  svg.appendChild(g);
}

/** A line with gaps where a window had no value; a lone value shows as a dot. */
function drawLine(svg, values, top, cls) {
  const n = values.length;
  const w = PLOT.right - PLOT.left;
  let d = "";
  let open = false;
  values.forEach((v, i) => {
    if (typeof v !== "number") {
      open = false;
      return;
    }
    const x = (PLOT.left + (n === 1 ? w / 2 : (i * w) / (n - 1))).toFixed(2);
    const y = yOf(v, top).toFixed(2);
    const next = values[i + 1];
    if (!open) d += "M" + x + " " + y + (typeof next === "number" ? "" : "l0.01 0");
    else d += "L" + x + " " + y;
    open = true;
  });
  if (d) svg.appendChild(svgEl("path", { class: cls, d }));
}

function lastNumber(list) {
  for (let i = list.length - 1; i >= 0; i--) if (typeof list[i] === "number") return list[i];
  return null;
}

const sum = (list) => list.reduce((a, b) => a + (b || 0), 0);
const peak = (list) => Math.max(0, ...list.filter((v) => typeof v === "number"));

function fmtPercent(x) {
  if (!x) return "0%";
  return (x >= 10 ? x.toFixed(0) : x.toFixed(1).replace(/\.0$/, "")) + "%";
}

function fmtAxisRate(x) {
  return x === 0 ? "0" : fmtRate(x);
}

function fmtAxisBytes(x) {
  if (x === 0) return "0";
  return x >= 1024 * MIB ? (x / (1024 * MIB)).toFixed(x % (1024 * MIB) ? 1 : 0) + " GiB" : Math.round(x / MIB) + " MiB";
}

function drawCharts(p, stats) {
  const points = Array.isArray(stats.points) ? stats.points : [];
  const step = stats.step_seconds > 0 ? stats.step_seconds : 10;
  // The newest window is still filling: "now" is read from the one before.
  const full = Math.max(0, points.length - 2);
  const c = p.charts;

  if (c["chart-requests"]) {
    const req = points.map((x) => (x.requests || 0) / step);
    const err = points.map((x) => (x.errors || 0) / step);
    const top = niceMax(peak(req), 1);
    clearChart(c["chart-requests"].svg, top, fmtAxisRate);
    drawBars(c["chart-requests"].svg, req, top, "bars bars-requests");
    setText(c["chart-requests"].caption, "Requests: " + fmtRate(req[full]) + " now, peak " + fmtRate(peak(req)) + ".");

    // Errors on the requests' own scale: one 502 among many requests is a small bar.
    clearChart(c["chart-errors"].svg, top, fmtAxisRate);
    drawBars(c["chart-errors"].svg, err, top, "bars bars-errors");
    const errors = sum(points.map((x) => x.errors));
    const requests = sum(points.map((x) => x.requests));
    setText(
      c["chart-errors"].caption,
      "Errors (5xx): " +
        errors +
        " in 10 minutes" +
        (requests ? " (" + fmtPercent((100 * errors) / requests) + " of " + requests + " requests)" : " (no requests)") +
        ", " +
        fmtRate(err[full]) +
        " now.",
    );

    const p50 = points.map((x) => (typeof x.p50_ms === "number" ? x.p50_ms : null));
    const p95 = points.map((x) => (typeof x.p95_ms === "number" ? x.p95_ms : null));
    const ltop = niceMax(peak(p95.concat(p50)), 1);
    clearChart(c["chart-latency"].svg, ltop, (v) => (v === 0 ? "0" : fmtMs(v)));
    drawLine(c["chart-latency"].svg, p95, ltop, "line line-p95");
    drawLine(c["chart-latency"].svg, p50, ltop, "line line-p50");
    const l50 = lastNumber(p50);
    const l95 = lastNumber(p95);
    fill(
      c["chart-latency"].caption,
      "Latency: ",
      el("span", { class: "swatch swatch-p50" }),
      "p50 " + fmtMs(l50) + ", ",
      el("span", { class: "swatch swatch-p95" }),
      "p95 " + fmtMs(l95) + (l50 === null && l95 === null ? " (no requests)" : " latest") + ".",
    );
  }

  const memory = points.map((x) => x.memory_bytes || 0);
  const mtop = niceMax(peak(memory), MIB);
  clearChart(c["chart-memory"].svg, mtop, fmtAxisBytes);
  drawBars(c["chart-memory"].svg, memory, mtop, "bars bars-memory");
  const svc = p.svc || {};
  const limit = typeof svc.memory_limit_bytes === "number" ? " (limit " + fmtBytes(svc.memory_limit_bytes) + " per instance)" : "";
  setText(
    c["chart-memory"].caption,
    "Memory: " + fmtBytes(memory[points.length - 1] || memory[full] || 0) + " now, peak " + fmtBytes(peak(memory)) + limit + ".",
  );

  const cpu = points.map((x) => (100 * (x.cpu_seconds || 0)) / step);
  const ctop = niceMax(peak(cpu), 1);
  clearChart(c["chart-cpu"].svg, ctop, (v) => (v === 0 ? "0" : fmtPercent(v)));
  drawBars(c["chart-cpu"].svg, cpu, ctop, "bars bars-cpu");
  setText(
    c["chart-cpu"].caption,
    "CPU: " + fmtPercent(cpu[full]) + " of a core now, peak " + fmtPercent(peak(cpu)) + ", " +
      sum(points.map((x) => x.cpu_seconds)).toFixed(2) + " s in 10 minutes.",
  );
}
