// First contentful paint as the browser reports it, shared by the
// dashboard test (tests/dashboard.rs, which holds it to a sanity bound
// only) and the dashboard benchmark (first-paint.mjs, run by
// scripts/bench-dashboard.py, which sets it against its target beside a
// plain page served by the same daemon).

/**
 * Loads `url` in `page` `loads` times, each a fresh document, and returns
 * each load's first contentful paint in ms, sorted; `ready` is a selector
 * the page shows once it is drawn.
 */
export async function firstPaints(page, url, ready, loads) {
  const paints = [];
  for (let i = 0; i < loads; i++) {
    paints.push(await firstPaint(page, url, ready));
  }
  return paints.sort((a, b) => a - b);
}

/** One fresh load of `url`: its first contentful paint in ms. */
export async function firstPaint(page, url, ready) {
  await page.goto(url);
  await page.locator(ready).waitFor();
  return page.evaluate(() => {
    const fcp = performance.getEntriesByName("first-contentful-paint")[0];
    return fcp ? fcp.startTime : Infinity;
  });
}

/** The middle of sorted samples. */
export function median(sorted) {
  return sorted[Math.floor(sorted.length / 2)];
}
