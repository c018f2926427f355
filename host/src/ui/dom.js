/*
 * Element builders and formatting for the mesh dashboard: el/svgEl build
 * nodes from text and attributes only, sync updates keyed lists in place,
 * and the formatting helpers turn the API's numbers and times into words.
 */

const SVG_NS = "http://www.w3.org/2000/svg";
/** u32::MAX: a count quota that means "no limit". */
const COUNT_UNLIMITED = 4294967295;
/** u64::MAX does not survive as a JSON number; anything this big means "no limit". */
const BYTES_UNLIMITED = 2 ** 62;
const KIB = 1024;
const MIB = KIB * 1024;
const GIB = MIB * 1024;

/** Per-node bookkeeping (keys, child references) without touching the DOM. */
const keyOf = new WeakMap();
export const refsOf = new WeakMap();

// ---------------------------------------------------------------- DOM helpers

export function $(id) {
  return document.getElementById(id);
}

/** Builds an element: attrs are set with setAttribute (never style or on*), strings become text nodes. */
export function el(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svgEl(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "style" || /^on/i.test(name)) throw new Error("el: attribute not allowed: " + name);
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  appendAll(node, children);
  return node;
}

function appendAll(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) appendAll(node, child);
    else if (typeof child === "object") node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces a node's children (strings as text). */
export function fill(node, ...children) {
  node.replaceChildren();
  appendAll(node, children);
}

/** Sets text only when it changed, so unchanged cells are not touched. */
export function setText(node, text) {
  if (!node) return;
  const value = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function setAttr(node, name, value) {
  if (value === null || value === undefined) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, String(value));
  }
}

export function show(node, visible) {
  if (node && node.hidden === visible) node.hidden = !visible;
}

/**
 * Keyed update of parent's children: reuses the node of each key (so
 * focus, open <details> and scroll survive), makes missing ones, drops
 * stale ones and moves nodes only when out of order.
 */
export function sync(parent, items, keyFn, make, update) {
  const keys = items.map((item) => String(keyFn(item)));
  const wanted = new Set(keys);
  const existing = new Map();
  for (const child of Array.from(parent.children)) {
    const key = keyOf.get(child);
    if (key !== undefined && wanted.has(key) && !existing.has(key)) existing.set(key, child);
    else child.remove();
  }
  let prev = null;
  items.forEach((item, i) => {
    let node = existing.get(keys[i]);
    if (!node) {
      node = make(item);
      keyOf.set(node, keys[i]);
    }
    if (update) update(node, item);
    const expected = prev ? prev.nextSibling : parent.firstChild;
    if (expected !== node) parent.insertBefore(node, expected);
    prev = node;
  });
}

function stateClass(word) {
  return "state-" + String(word || "unknown").replace(/[^a-z0-9_-]/gi, "");
}

/** Sets a cell's state word and its colour class, keeping its base class. */
export function setState(node, base, word) {
  setText(node, word || "");
  const cls = base + " " + stateClass(word);
  if (node.className !== cls) node.className = cls;
}

export function badge(word) {
  return el("span", { class: "state " + stateClass(word) }, word || "");
}

export function colHeads(...names) {
  return el("thead", null, el("tr", null, names.map((n) => el("th", { scope: "col" }, n))));
}

/** A table in its scrolling wrapper, with a caption for screen readers and column heads. */
export function gridTable(attrs, caption, heads, body) {
  return el(
    "div",
    { class: "table-wrap" },
    el("table", attrs, el("caption", { class: "visually-hidden" }, caption), colHeads(...heads), body),
  );
}

/**
 * An empty table row to fill by cell index: a row header of class head,
 * then one cell per entry of cells (a class, or the cell's attributes).
 */
export function emptyRow(attrs, head, ...cells) {
  return el(
    "tr",
    attrs,
    el("th", { scope: "row", class: head }),
    cells.map((c) => el("td", typeof c === "string" ? { class: c } : c)),
  );
}

export function fact(label, value, attrs) {
  const dd = el("dd", attrs || null);
  const row = el("div", { class: "fact" }, el("dt", null, label), dd);
  if (value !== undefined) appendAll(dd, [value]);
  return { row, dd };
}

// ---------------------------------------------------------------- formatting

/** Parses RFC 3339, trimming sub-millisecond digits some engines reject. */
export function parseTime(iso) {
  if (!iso) return null;
  const t = Date.parse(String(iso).replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(t) ? null : t;
}

function span(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m";
  const h = Math.floor(m / 60);
  if (h < 24) return h + "h";
  return Math.floor(h / 24) + "d";
}

/** "12s", "3m", "2h", "4d" since iso; "-" when unknown. */
export function age(iso) {
  const t = parseTime(iso);
  return t === null ? "-" : span((Date.now() - t) / 1000);
}

export function ago(iso) {
  const a = age(iso);
  return a === "-" ? "-" : a + " ago";
}

export function until(iso) {
  const t = parseTime(iso);
  if (t === null) return "-";
  const s = (t - Date.now()) / 1000;
  return s < 1 ? "due now" : "in " + span(s);
}

function pad2(n) {
  return String(n).padStart(2, "0");
}

export function hms(iso) {
  const t = parseTime(iso);
  if (t === null) return "";
  const d = new Date(t);
  return pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
}

export function absTime(iso) {
  const t = parseTime(iso);
  if (t === null) return "";
  const d = new Date(t);
  return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " + hms(iso);
}

export function timeEl(iso, text, cls) {
  return el("time", { datetime: iso || null, title: absTime(iso) || null, class: cls || null }, text);
}

function trimNumber(n) {
  return Number.isInteger(n) ? String(n) : n.toFixed(1).replace(/\.0$/, "");
}

/** Like the CLI: exact units when they divide, else one decimal. */
export function fmtBytes(n) {
  if (typeof n !== "number") return "-";
  if (n >= BYTES_UNLIMITED) return "unlimited";
  if (n >= GIB) return trimNumber(n / GIB) + " GiB";
  if (n >= MIB) return trimNumber(n / MIB) + " MiB";
  if (n >= KIB) return trimNumber(n / KIB) + " KiB";
  return n + " bytes";
}

export function fmtMiB(n) {
  return typeof n === "number" ? trimNumber(n / MIB) + " MiB" : "-";
}

export function fmtCount(n) {
  if (typeof n !== "number") return "-";
  return n >= COUNT_UNLIMITED ? "unlimited" : String(n);
}

export function fmtDuration(ms) {
  if (typeof ms !== "number") return "-";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return trimNumber(Math.round(ms / 100) / 10) + " s";
  const s = Math.round(ms / 1000);
  return Math.floor(s / 60) + "m " + (s % 60) + "s";
}

export function fmtRate(x) {
  if (!x) return "0/s";
  return (x >= 10 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(2)) + "/s";
}

export function fmtMs(x) {
  if (typeof x !== "number") return "-";
  return (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) + " ms";
}

/** argv as a shell would read it back. */
export function fmtCommand(argv) {
  return (argv || [])
    .map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : "'" + String(a).replace(/'/g, "'\\''") + "'"))
    .join(" ");
}

export function plural(n, word) {
  return n + " " + word + (n === 1 ? "" : "s");
}

export function isHttpUrl(u) {
  return /^https?:\/\//i.test(String(u));
}

export function enc(s) {
  return encodeURIComponent(s);
}

export function servicePath(stack, name) {
  return "/v1/services/" + enc(stack) + "/" + enc(name);
}

export function serviceHref(stack, name) {
  return "#/service/" + enc(stack) + "/" + enc(name);
}
