/*
 * The service page: its summary and environment variables (edited here,
 * values masked), instances, actions (scale, restart, run now, publish,
 * unpublish, delete), charts and, for a cron job, its runs.
 */

import {
  $,
  absTime,
  age,
  ago,
  colHeads,
  el,
  emptyRow,
  fact,
  fill,
  fmtCommand,
  fmtDuration,
  fmtMiB,
  gridTable,
  isHttpUrl,
  plural,
  servicePath,
  setAttr,
  setState,
  setText,
  show,
  sync,
  timeEl,
  until,
} from "./dom.js";
import { api, ApiError, view } from "./api.js";
import {
  actionError,
  actionRegions,
  endpointsCell,
  field,
  focusHeading,
  instanceBlock,
  mount,
  runAction,
  runningCount,
  updateEndpoints,
  updateInstances,
} from "./page.js";
import { buildCharts, loadStats } from "./charts.js";
import { buildEvents, buildLogs, loadServiceEvents, startLogs, syncInstanceOptions } from "./logs.js";

const STATS_MS = 10000;

export async function refreshService(gen, r) {
  let svc;
  try {
    svc = await api("GET", servicePath(r.stack, r.name));
  } catch (e) {
    if (e instanceof ApiError && e.status === 404 && gen === view.gen) {
      showMissing(r);
      return;
    }
    throw e;
  }
  if (gen !== view.gen || !svc) return;
  let page = view.page;
  if (!page || page.kind !== "service" || page.type !== svc.type) page = buildServicePage(svc);
  updateServicePage(page, svc);
  focusHeading(page.heading);
}

function showMissing(r) {
  if (view.page && view.page.kind === "missing") return;
  const heading = el("h1", { id: "not-found-title", tabindex: "-1" }, "No service " + r.stack + "/" + r.name);
  mount(
    { kind: "missing" },
    el(
      "section",
      { id: "not-found", "aria-labelledby": "not-found-title" },
      heading,
      el("p", null, el("a", { href: "#/" }, "Back to the overview")),
    ),
  );
  focusHeading(heading);
}

function buildServicePage(svc) {
  const key = svc.stack + "/" + svc.name;
  const cron = svc.type === "cron";
  const p = {
    kind: "service",
    type: svc.type,
    key,
    stack: svc.stack,
    name: svc.name,
    base: servicePath(svc.stack, svc.name),
    events: [],
    eventKeys: new Set(),
    seq: 0,
  };
  p.heading = el(
    "h1",
    { id: "service-title", tabindex: "-1" },
    svc.name,
    el("span", { class: "muted subtitle" }, " in stack " + svc.stack),
  );

  const parts = [
    el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Overview"), " / " + key),
    p.heading,
    el("div", { class: "columns" }, buildSummary(p, svc), buildActions(p, svc)),
    buildInstancesSection(p),
  ];
  if (cron) parts.push(buildRuns(p));
  parts.push(buildCharts(p, svc.type === "web"), buildLogs(p), buildEvents(p));
  mount(p, el("section", { id: "service", "data-service": key, "aria-labelledby": "service-title" }, parts));

  startLogs(p);
  p.svc = svc;
  loadStats(p);
  view.statsTimer = setInterval(() => loadStats(p), STATS_MS);
  loadServiceEvents(p);
  return p;
}

function buildSummary(p, svc) {
  const f = (label, name, attrs) => {
    const item = fact(label, undefined, attrs);
    p["f_" + name] = item;
    return item.row;
  };
  p.endpoints = endpointsCell();
  const endpointsFact = fact("Endpoints", p.endpoints.nodes);
  p.envBody = el("tbody");
  const envForm = buildEnvForm(p);
  p.envDetails = el(
    "details",
    { class: "env-vars" },
    (p.envSummary = el("summary", null, "Environment variables")),
    el(
      "div",
      { class: "table-wrap" },
      el("table", { class: "grid" }, colHeads("Name", "Value", "Shown", "Change"), p.envBody),
    ),
    envForm,
  );
  p.envDetails.addEventListener("click", (ev) => onEnvClick(ev, p));
  return el(
    "section",
    { id: "summary", "aria-labelledby": "summary-title" },
    el("h2", { id: "summary-title" }, "Summary"),
    el(
      "dl",
      { class: "facts summary" },
      f("Description", "description"),
      f("Type", "type"),
      f("Command", "command", { class: "mono" }),
      f("Memory limit", "memory"),
      f("Version", "version"),
      endpointsFact.row,
      f("DNS name", "dns", { class: "mono" }),
      f("Serving", "serving"),
      f("Schedule", "schedule"),
      f("Timezone", "timezone"),
      f("Next run", "next"),
      f("Last run", "last"),
      f("Timeout", "timeout"),
      f("Created", "created"),
    ),
    p.envDetails,
  );
}

function buildInstancesSection(p) {
  p.wanted = el("span", { class: "wanted" });
  p.running = el("span", { class: "running" });
  p.instances = instanceBlock();
  // A cron job has no standing instances: only a run's, while it runs.
  const counts =
    p.type === "cron"
      ? el("p", { class: "counts" }, "An instance runs at each firing and ends with its run.")
      : el("p", { class: "counts" }, p.running, " running of ", p.wanted, " wanted");
  return el(
    "section",
    { id: "instances-section", "aria-labelledby": "instances-title" },
    el("h2", { id: "instances-title" }, "Instances"),
    counts,
    p.instances.node,
  );
}

function buildActions(p, svc) {
  const cron = svc.type === "cron";
  const items = [];
  if (!cron) {
    const scale = el(
      "form",
      { id: "scale-form", class: "action" },
      field("scale-input", "Instances", {
        type: "number",
        min: "0",
        step: "1",
        inputmode: "numeric",
        value: svc.instances_desired ?? 0,
      }),
      el("button", { id: "scale-button", type: "submit" }, "Scale"),
    );
    scale.addEventListener("submit", (ev) => onScale(ev, p));
    const restart = el("button", { id: "restart-button", type: "button" }, "Restart");
    restart.addEventListener("click", () => onRestart(restart, p));
    items.push(
      scale,
      el("div", { class: "action" }, el("p", { class: "hint" }, svc.type === "web" ? "Replace every instance; requests in flight finish." : "Replace every instance, one at a time."), restart),
    );
  } else {
    const trigger = el("button", { id: "trigger-button", type: "button" }, "Run now");
    trigger.addEventListener("click", () => onTrigger(trigger, p));
    items.push(el("div", { class: "action" }, el("p", { class: "hint" }, "Start a run outside the schedule."), trigger));
  }
  if (!cron) {
    // A cron job cannot be published: it has no standing instance to answer.
    const publish = el(
      "form",
      { id: "publish-form", class: "action" },
      field("publish-endpoint", "Endpoint", { type: "text", placeholder: "www" }),
      field("publish-path", "Path", { type: "text", placeholder: "/ (optional)" }),
      el("button", { id: "publish-button", type: "submit" }, "Publish"),
    );
    publish.addEventListener("submit", (ev) => onPublish(ev, p));
    p.unpublishList = el("ul", { id: "unpublish-list", class: "plain", "data-empty": "Not published." });
    items.push(publish, el("div", { class: "action" }, p.unpublishList));
  }
  const remove = el("button", { id: "delete-button", type: "button", class: "danger" }, "Delete service");
  remove.addEventListener("click", () => onDelete(remove, p));
  items.push(el("div", { class: "action" }, el("p", { class: "hint" }, "Stop every instance and remove the service."), remove));
  const section = el(
    "section",
    { id: "actions", "aria-labelledby": "actions-title" },
    el("h2", { id: "actions-title" }, "Actions"),
    actionRegions(),
    el("div", { class: "action-list" }, items),
  );
  section.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action='unpublish']");
    if (button) onUnpublish(button, p);
  });
  return section;
}

function onScale(ev, p) {
  ev.preventDefault();
  const input = $("scale-input");
  const raw = input.value.trim();
  const n = Number(raw);
  if (raw === "" || !Number.isInteger(n) || n < 0) {
    actionError("Enter a whole number of instances, 0 or more.");
    input.focus();
    return;
  }
  runAction($("scale-button"), async () => {
    await api("PATCH", p.base, { instances: n });
    return "Scaled " + p.key + " to " + plural(n, "instance") + ".";
  });
}

/** Asks first, naming what the deletion breaks: its URLs and the services that call it. */
function onDelete(button, p) {
  const svc = p.svc || {};
  const lines = ["Delete " + p.key + "? Its instances stop and it cannot be undone."];
  if ((svc.endpoints || []).length) lines.push("It is published at " + svc.endpoints.join(", ") + ": those URLs go offline.");
  const callers = (svc.called_by || []).map((c) => c.stack + "/" + c.name);
  if (callers.length) lines.push("Called by name by " + callers.join(", ") + ": their calls will fail.");
  if (!window.confirm(lines.join("\n\n"))) return;
  runAction(button, async () => {
    await api("DELETE", p.base);
    // The page's service is gone: go back to the overview, saying so there.
    view.flash = "Deleted " + p.key + ".";
    location.hash = "#/";
    return "Deleted " + p.key + ".";
  });
}

function onRestart(button, p) {
  runAction(button, async () => {
    const svc = await api("POST", p.base + "/restart");
    const n = svc && svc.instances ? svc.instances.length : 0;
    return "Restarting " + p.key + (n ? ": " + plural(n, "instance") + "." : ".");
  });
}

function onTrigger(button, p) {
  runAction(button, async () => {
    const res = await api("POST", p.base + "/trigger");
    if (res && res.number !== undefined) return "Started run #" + res.number + " on " + res.instance + ".";
    return "Started a run of " + p.key + ".";
  });
}

function onPublish(ev, p) {
  ev.preventDefault();
  const endpointInput = $("publish-endpoint");
  const pathInput = $("publish-path");
  const endpoint = endpointInput.value.trim();
  const path = pathInput.value.trim() || null;
  if (!endpoint) {
    actionError("Enter an endpoint, such as www.");
    endpointInput.focus();
    return;
  }
  runAction($("publish-button"), async () => {
    await api("POST", p.base + "/publish", { endpoint, path });
    endpointInput.value = "";
    pathInput.value = "";
    return "Published " + p.key + " on " + endpoint + (path ? " at " + path : "") + ".";
  });
}

/** An endpoint URL with a path splits into scheme://host and the path; without one it goes as is. */
function unpublishBody(url) {
  try {
    const u = new URL(url);
    if (u.pathname && u.pathname !== "/") return { endpoint: u.protocol + "//" + u.host, path: u.pathname };
  } catch (_) {
    /* not a URL: send it as written */
  }
  return { endpoint: url, path: null };
}

async function onUnpublish(button, p) {
  const url = button.getAttribute("data-endpoint");
  await runAction(button, async () => {
    await api("POST", p.base + "/unpublish", unpublishBody(url));
    return "Unpublished " + url + ".";
  });
  // Its button is gone now: keep keyboard focus inside the actions.
  if (!button.isConnected && $("publish-endpoint")) $("publish-endpoint").focus();
}

function makeUnpublish(url) {
  return el(
    "li",
    null,
    el("button", { type: "button", class: "small", "data-action": "unpublish", "data-endpoint": url }, "Unpublish " + url),
  );
}

function buildRuns(p) {
  p.nextRun = el("p", { id: "next-run" });
  p.runsBody = el("tbody");
  p.runsWrap = gridTable(
    { id: "runs", class: "grid" },
    "Runs, newest first",
    ["Run", "Trigger", "Status", "Started", "Duration", "Exit", "Message"],
    p.runsBody,
  );
  p.runsEmpty = el("p", { class: "empty" }, "No runs yet.");
  return el(
    "section",
    { id: "runs-section", "aria-labelledby": "runs-title" },
    el("h2", { id: "runs-title" }, "Runs"),
    p.nextRun,
    p.runsEmpty,
    p.runsWrap,
  );
}

function makeRunRow(run) {
  return emptyRow(
    { "data-run": run.number },
    "num number",
    "trigger",
    "status",
    "started",
    "num duration",
    "num exit",
    "message",
  );
}

function updateRunRow(tr, run) {
  const c = tr.cells;
  setText(c[0], run.number);
  setText(c[1], run.trigger || "");
  setState(c[2], "status", run.status);
  setText(c[3], ago(run.started_at));
  setAttr(c[3], "title", absTime(run.started_at) || null);
  setText(c[4], run.status === "running" ? "-" : fmtDuration(run.duration_ms));
  setText(c[5], run.exit_code === null || run.exit_code === undefined ? "-" : run.exit_code);
  setText(c[6], run.message || "");
}

function updateServicePage(p, svc) {
  p.svc = svc;
  const cron = svc.type === "cron";
  show(p.f_description.row, !!svc.description);
  setText(p.f_description.dd, svc.description || "");
  setText(p.f_type.dd, svc.type + (svc.kind ? " (" + svc.kind + ")" : ""));
  setText(p.f_command.dd, fmtCommand(svc.command));
  setText(p.f_memory.dd, fmtMiB(svc.memory_limit_bytes));
  // A service with no instance (a cron job between runs) reports version 0.
  setText(p.f_version.dd, svc.version ? "v" + svc.version : "-");
  updateEndpoints(p.endpoints.list, p.endpoints.none, svc);
  setText(p.f_dns.dd, svc.dns_name || "");
  show(p.f_serving.row, !!svc.serving && !cron);
  setText(p.f_serving.dd, svc.serving || "");
  show(p.f_schedule.row, !!svc.schedule);
  setText(p.f_schedule.dd, svc.schedule || "");
  show(p.f_timezone.row, !!svc.timezone);
  setText(p.f_timezone.dd, svc.timezone || "");
  show(p.f_next.row, cron);
  setText(p.f_next.dd, svc.next_run ? absTime(svc.next_run) + " (" + until(svc.next_run) + ")" : "none");
  const lastRun = (svc.runs || [])[0];
  show(p.f_last.row, cron);
  setText(
    p.f_last.dd,
    lastRun ? "#" + lastRun.number + " " + lastRun.status + ", " + ago(lastRun.started_at) : "no runs yet",
  );
  show(p.f_timeout.row, svc.timeout_ms !== null && svc.timeout_ms !== undefined);
  setText(p.f_timeout.dd, fmtDuration(svc.timeout_ms));
  setText(p.f_created.dd, ago(svc.created_at));
  setAttr(p.f_created.dd, "title", absTime(svc.created_at) || null);

  const env = Object.entries(svc.env || {}).sort((a, b) => a[0].localeCompare(b[0]));
  setText(p.envSummary, "Environment variables (" + env.length + ")");
  sync(
    p.envBody,
    env,
    (kv) => kv[0],
    envRow,
    (tr, kv) => {
      setText(tr.cells[0], kv[0]);
      tr.envValue = kv[1];
      const reveal = tr.cells[2].firstChild;
      setAttr(reveal, "aria-label", (revealed(reveal) ? "Hide" : "Show") + " the value of " + kv[0]);
      setText(tr.cells[1], revealed(reveal) ? kv[1] : MASK);
    },
  );

  setText(p.wanted, svc.instances_desired ?? 0);
  setText(p.running, runningCount(svc));
  updateInstances(p.instances, svc);
  if (p.unpublishList) sync(p.unpublishList, svc.endpoints || [], (u) => u, makeUnpublish);
  syncInstanceOptions(p, svc.instances || []);

  if (cron) {
    if (svc.next_run) {
      fill(p.nextRun, "Next run: ", timeEl(svc.next_run, absTime(svc.next_run)), " (" + until(svc.next_run) + ")");
    } else {
      fill(p.nextRun, "No next run scheduled.");
    }
    const runs = svc.runs || [];
    show(p.runsEmpty, runs.length === 0);
    show(p.runsWrap, runs.length > 0);
    sync(p.runsBody, runs, (r) => r.number, makeRunRow, updateRunRow);
  }
}

// Values of environment variables are often secrets (a database URL with
// its password): masked until asked for, one at a time.
const MASK = "\u2022\u2022\u2022\u2022\u2022\u2022\u2022\u2022";

function revealed(button) {
  return button.getAttribute("aria-pressed") === "true";
}

function envRow(kv) {
  const reveal = el("button", { type: "button", class: "link reveal", "aria-pressed": "false" }, "Show");
  const edit = el("button", { type: "button", class: "link", "data-action": "env-edit", "aria-label": "Edit " + kv[0] }, "Edit");
  const remove = el("button", { type: "button", class: "link", "data-action": "env-remove", "aria-label": "Remove " + kv[0] }, "Remove");
  const tr = el(
    "tr",
    { "data-env-name": kv[0] },
    el("th", { scope: "row", class: "mono" }),
    el("td", { class: "mono" }),
    el("td", null, reveal),
    el("td", { class: "env-change" }, edit, " ", remove),
  );
  reveal.addEventListener("click", () => {
    const shown = !revealed(reveal);
    setAttr(reveal, "aria-pressed", String(shown));
    setText(reveal, shown ? "Hide" : "Show");
    setText(tr.cells[1], shown ? tr.envValue : MASK);
  });
  return tr;
}

// ---------------------------------------------------------------- editing variables

/** Set or change one variable: its value typed masked, as a password is. */
function buildEnvForm(p) {
  const form = el(
    "form",
    { id: "env-form", class: "action env-form" },
    field("env-name", "Name", { type: "text", placeholder: "DATABASE_URL" }),
    field("env-value", "Value", { type: "password" }),
    el("button", { id: "env-set-button", type: "submit" }, "Set variable"),
  );
  form.addEventListener("submit", (ev) => onEnvSet(ev, p));
  return form;
}

/** A row's Edit puts its name in the form; its Remove asks, then removes it. */
function onEnvClick(ev, p) {
  const button = ev.target.closest("button[data-action^='env-']");
  if (!button) return;
  const name = button.closest("tr").getAttribute("data-env-name");
  if (button.getAttribute("data-action") === "env-edit") {
    $("env-name").value = name;
    $("env-value").value = "";
    $("env-value").focus();
  } else {
    onEnvRemove(button, p, name);
  }
}

function onEnvSet(ev, p) {
  ev.preventDefault();
  const name = $("env-name").value.trim();
  const value = $("env-value").value;
  if (!name) {
    actionError("Enter the variable's name.");
    $("env-name").focus();
    return;
  }
  runAction($("env-set-button"), async () => {
    await api("PATCH", p.base, { env: [name + "=" + value] });
    $("env-name").value = "";
    $("env-value").value = "";
    return "Set " + name + " on " + p.key + "; its instances restart with it.";
  });
}

function onEnvRemove(button, p, name) {
  if (!window.confirm("Remove " + name + " from " + p.key + "? Its instances restart without it.")) return;
  runAction(button, async () => {
    await api("PATCH", p.base, { unset_env: [name] });
    return "Removed " + name + " from " + p.key + ".";
  });
}
