// The dashboard's first contentful paint, for the benchmark suite
// (scripts/bench-dashboard.py runs it; not a test): the dashboard's
// sign-in page and, as the baseline, a plain HTML page served by the same
// daemon's ingress, loaded in turns in one headless chromium so that
// whatever else the machine is doing weighs on both alike. Prints one JSON
// line: each page's paints in ms, sorted.
//
// Environment:
//   DASHBOARD_URL  the dashboard, http://127.0.0.1:PORT/ui/
//   BASELINE_URL   the plain page, e.g. http://www.localhost:PORT/blog/
//   LOADS          loads of each page (default 21)
//   CHROMIUM       the browser (default /usr/bin/chromium)

import { chromium } from "playwright-core";
import { firstPaint } from "./paint.mjs";

const pages = [
  { name: "dashboard", url: need("DASHBOARD_URL"), ready: "#signin" },
  { name: "baseline", url: need("BASELINE_URL"), ready: "h1" },
];
const LOADS = Number(process.env.LOADS || 21);

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Names under .localhost are loopback; say so rather than rely on the
  // resolver.
  args: ["--no-sandbox", "--host-resolver-rules=MAP *.localhost 127.0.0.1"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const page = await context.newPage();
  const paints = Object.fromEntries(pages.map((p) => [p.name, []]));
  // One load of each first, not counted: the browser's own start-up.
  for (const p of pages) {
    await firstPaint(page, p.url, p.ready);
  }
  for (let i = 0; i < LOADS; i++) {
    for (const p of pages) {
      paints[p.name].push(await firstPaint(page, p.url, p.ready));
    }
  }
  for (const list of Object.values(paints)) {
    list.sort((a, b) => a - b);
  }
  console.log(JSON.stringify(paints));
} finally {
  await browser.close();
}
