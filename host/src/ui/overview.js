/*
 * The overview page: the environments table (for the operator), the stacks
 * with their versions and rollback, and a card per service.
 */

import {
  ago,
  badge,
  colHeads,
  el,
  emptyRow,
  enc,
  fact,
  fill,
  fmtBytes,
  fmtCount,
  refsOf,
  serviceHref,
  setAttr,
  setText,
  show,
  sync,
  timeEl,
  until,
} from "./dom.js";
import { api, errorText, isAbort, session, view } from "./api.js";
import {
  actionRegions,
  endpointsCell,
  focusHeading,
  instanceBlock,
  mount,
  runAction,
  runningCount,
  scheduleText,
  updateEndpoints,
  updateInstances,
} from "./page.js";

// ---------------------------------------------------------------- overview

export async function refreshOverview(gen) {
  const me = session.me;
  const [services, stacks, envs] = await Promise.all([
    api("GET", "/v1/services"),
    api("GET", "/v1/stacks"),
    me.operator ? api("GET", "/v1/envs") : Promise.resolve(null),
  ]);
  if (gen !== view.gen) return;
  let page = view.page;
  if (!page || page.kind !== "overview") page = buildOverview(me.operator);
  if (page.envBody) renderEnvs(page, Array.isArray(envs) ? envs : []);
  renderStacks(page, Array.isArray(stacks) ? stacks : []);
  renderServices(page, Array.isArray(services) ? services : []);
  focusHeading(page.heading);
}

function buildOverview(operator) {
  const page = { kind: "overview" };
  page.heading = el("h1", { tabindex: "-1" }, "Overview");
  const parts = [page.heading, ...actionRegions()];
  if (operator) {
    page.envBody = el("tbody");
    parts.push(
      el(
        "section",
        { id: "envs", "aria-labelledby": "envs-title" },
        el("h2", { id: "envs-title" }, "Environments"),
        el(
          "div",
          { class: "table-wrap" },
          el(
            "table",
            { class: "grid" },
            colHeads("Name", "Alias", "Outbound", "Services", "Instances", "Memory", "Code", "Created"),
            page.envBody,
          ),
        ),
      ),
    );
  }
  page.stackList = el("div", { class: "stack-list" });
  page.stacksEmpty = el("p", { class: "empty" }, "No stacks yet.");
  page.stacks = el(
    "section",
    { id: "stacks", "aria-labelledby": "stacks-title" },
    el("h2", { id: "stacks-title" }, "Stacks"),
    page.stacksEmpty,
    page.stackList,
  );
  page.stacks.addEventListener("click", onStacksClick);
  page.groups = el("div", { class: "groups" });
  page.servicesEmpty = el("p", { class: "empty" }, "No services yet.");
  parts.push(
    page.stacks,
    el(
      "section",
      { id: "services", "aria-labelledby": "services-title" },
      el("h2", { id: "services-title" }, "Services"),
      page.servicesEmpty,
      page.groups,
    ),
  );
  mount(page, el("div", { id: "overview" }, parts));
  return page;
}

function renderEnvs(page, envs) {
  const sorted = envs.slice().sort((a, b) => String(a.name).localeCompare(String(b.name)));
  sync(page.envBody, sorted, (e) => e.name, makeEnvRow, updateEnvRow);
}

function makeEnvRow(env) {
  return emptyRow(
    { "data-env": env.name },
    null,
    "alias",
    "outbound",
    "num services",
    "num instances",
    "num memory",
    "num code",
    "age",
  );
}

function updateEnvRow(tr, env) {
  const q = env.quotas || {};
  const c = tr.cells;
  setText(c[0], env.name);
  setText(c[1], env.alias || "");
  setText(c[2], env.outbound || "");
  setText(c[3], fmtCount(q.services) + " / " + fmtCount(q.max_services));
  setText(c[4], fmtCount(q.instances) + " / " + fmtCount(q.max_instances));
  setText(c[5], fmtBytes(q.memory_bytes) + " / " + fmtBytes(q.max_memory_bytes));
  setText(c[6], fmtBytes(q.code_bytes) + " / " + fmtBytes(q.max_code_bytes));
  setText(c[7], ago(env.created_at));
}

function renderStacks(page, stacks) {
  const sorted = stacks.slice().sort((a, b) => String(a.name).localeCompare(String(b.name)));
  show(page.stacksEmpty, sorted.length === 0);
  sync(page.stackList, sorted, (s) => s.name, makeStack, updateStack);
}

function makeStack(stack) {
  const r = { name: stack.name, version: null };
  r.version = el("span", { class: "stack-version" });
  r.meta = el("p", { class: "meta" });
  r.error = el("p", { class: "msg error", role: "alert" });
  r.list = el("ol", { class: "version-list", "data-empty": "Loading versions…" });
  r.details = el("details", { class: "versions" }, el("summary", null, "Versions"), r.error, r.list);
  const node = el(
    "article",
    { class: "card stack", "data-stack": stack.name },
    el("header", { class: "card-head" }, el("h3", null, stack.name), r.version),
    r.meta,
    r.details,
  );
  r.details.addEventListener("toggle", () => {
    if (r.details.open) loadVersions(node);
  });
  refsOf.set(node, r);
  return node;
}

function updateStack(node, stack) {
  const r = refsOf.get(node);
  const changed = r.shown !== undefined && r.shown !== stack.version;
  r.shown = stack.version;
  setText(r.version, "v" + stack.version);
  const components = Object.keys(stack.components || {}).sort();
  const services = (stack.services || []).slice().sort();
  setText(
    r.meta,
    "Components: " + (components.join(", ") || "none") + ". Services: " + (services.join(", ") || "none") + ".",
  );
  if (changed && r.details.open) loadVersions(node);
}

async function loadVersions(node) {
  const r = refsOf.get(node);
  const gen = view.gen;
  try {
    const versions = await api("GET", "/v1/stacks/" + enc(r.name) + "/versions");
    if (gen !== view.gen) return;
    setText(r.error, "");
    const sorted = (Array.isArray(versions) ? versions : []).slice().sort((a, b) => b.number - a.number);
    setAttr(r.list, "data-empty", "No versions.");
    sync(r.list, sorted, (v) => v.number, makeVersion, updateVersion);
  } catch (e) {
    if (gen === view.gen && !isAbort(e)) setText(r.error, errorText(e));
  }
}

function makeVersion(v) {
  return el("li", { "data-version": v.number });
}

function updateVersion(li, v) {
  const r = refsOf.get(li);
  // Rebuild only when "current" moved, so a focused rollback button survives refreshes.
  if (!r || r.current !== !!v.current) {
    const time = timeEl(v.created_at, ago(v.created_at), "version-time");
    fill(
      li,
      el("span", { class: "version-number" }, "v" + v.number),
      " ",
      el("span", { class: "version-reason" }, v.reason || ""),
      " ",
      time,
      " ",
      v.current
        ? el("span", { class: "current-marker" }, "current")
        : el(
            "button",
            { type: "button", class: "small", "data-action": "rollback", "data-version": v.number },
            "Roll back to v" + v.number,
          ),
    );
    refsOf.set(li, { current: !!v.current, time });
  } else {
    setText(r.time, ago(v.created_at));
  }
}

function onStacksClick(ev) {
  const button = ev.target.closest("button[data-action='rollback']");
  if (!button) return;
  const holder = button.closest("[data-stack]");
  const stack = holder.getAttribute("data-stack");
  const to = Number(button.getAttribute("data-version"));
  if (!window.confirm("Roll back stack " + stack + " to v" + to + "? Its services restart on that code.")) return;
  runAction(button, async () => {
    const res = await api("POST", "/v1/stacks/" + enc(stack) + "/rollback", { to });
    loadVersions(holder);
    const now = res && res.version ? " (now v" + res.version.number + ")" : "";
    const restarting = res && res.restarting && res.restarting.length ? "; restarting " + res.restarting.join(", ") : "";
    return "Rolled back " + stack + " to v" + to + now + restarting + ".";
  });
}

function renderServices(page, services) {
  const groups = new Map();
  const sorted = services
    .slice()
    .sort((a, b) => String(a.stack).localeCompare(String(b.stack)) || String(a.name).localeCompare(String(b.name)));
  for (const s of sorted) {
    if (!groups.has(s.stack)) groups.set(s.stack, []);
    groups.get(s.stack).push(s);
  }
  show(page.servicesEmpty, sorted.length === 0);
  sync(page.groups, Array.from(groups), (g) => g[0], makeGroup, updateGroup);
}

function makeGroup([stack]) {
  const cards = el("div", { class: "cards" });
  const node = el(
    "div",
    { class: "stack-group", "data-group": stack },
    el("h3", null, el("span", { class: "muted" }, "Stack "), stack),
    cards,
  );
  refsOf.set(node, { cards });
  return node;
}

function updateGroup(node, [, services]) {
  sync(refsOf.get(node).cards, services, (s) => s.name, makeServiceCard, updateServiceCard);
}

function makeServiceCard(svc) {
  const r = {};
  r.type = el("span", { class: "tag" });
  r.kind = el("span", { class: "tag" });
  r.wanted = el("span", { class: "wanted" });
  r.running = el("span", { class: "running" });
  r.endpoints = endpointsCell();
  const endpoints = fact("Endpoints", r.endpoints.nodes);
  r.endpointsRow = endpoints.row;
  const schedule = fact("Schedule");
  r.scheduleRow = schedule.row;
  r.schedule = schedule.dd;
  r.cron = el("p", { class: "cron-summary" });
  r.instances = instanceBlock();
  const node = el(
    "article",
    { class: "card service", "data-service": svc.stack + "/" + svc.name },
    el(
      "header",
      { class: "card-head" },
      el("h4", null, el("a", { href: serviceHref(svc.stack, svc.name) }, svc.name)),
      r.type,
      r.kind,
    ),
    el(
      "dl",
      { class: "facts" },
      fact("Wanted", r.wanted).row,
      fact("Running", r.running).row,
      r.endpointsRow,
      r.scheduleRow,
    ),
    r.cron,
    r.instances.node,
  );
  refsOf.set(node, r);
  return node;
}

function updateServiceCard(node, svc) {
  const r = refsOf.get(node);
  setText(r.type, svc.type);
  setText(r.kind, svc.kind);
  setText(r.wanted, svc.instances_desired ?? 0);
  setText(r.running, runningCount(svc));
  updateEndpoints(r.endpoints.list, r.endpoints.none, svc);
  show(r.endpointsRow, (svc.endpoints || []).length > 0 || svc.type === "web");
  show(r.scheduleRow, !!svc.schedule);
  setText(r.schedule, scheduleText(svc));
  show(r.cron, svc.type === "cron");
  if (svc.type === "cron") renderCronSummary(r.cron, svc);
  updateInstances(r.instances, svc);
}

/** "Last run #12 succeeded 3s ago. Next run in 1s." */
function renderCronSummary(p, svc) {
  const last = (svc.runs || [])[0];
  const next = svc.next_run ? ["Next run ", timeEl(svc.next_run, until(svc.next_run)), "."] : ["No next run."];
  if (last) {
    fill(p, "Last run #" + last.number + " ", badge(last.status), " " + ago(last.started_at) + ". ", next);
  } else {
    fill(p, "No runs yet. ", next);
  }
}
