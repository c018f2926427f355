/*
 * The overview page: the environments table (for the operator), the
 * environment's custom domains and their certificates, the stacks with
 * their versions, rollback and a form to deploy a new version, and one
 * compact, searchable row per service with a form to create one.
 */

import {
  $,
  ago,
  badge,
  colHeads,
  el,
  emptyRow,
  enc,
  fill,
  fmtBytes,
  fmtCount,
  gridTable,
  plural,
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
  actionError,
  actionRegions,
  endpointsCell,
  field,
  focusHeading,
  mount,
  runAction,
  runningCount,
  scheduleText,
  updateEndpoints,
} from "./page.js";

// ---------------------------------------------------------------- overview

export async function refreshOverview(gen) {
  const me = session.me;
  const [services, stacks, envs] = await Promise.all([
    api("GET", "/v1/services"),
    api("GET", "/v1/stacks"),
    api("GET", "/v1/envs"),
  ]);
  if (gen !== view.gen) return;
  let page = view.page;
  if (!page || page.kind !== "overview") page = buildOverview(me.operator);
  const envList = Array.isArray(envs) ? envs : [];
  if (page.envBody) renderEnvs(page, envList);
  renderDomains(page, envList.find((e) => e.name === me.env));
  renderStacks(page, Array.isArray(stacks) ? stacks : []);
  page.services = Array.isArray(services) ? services : [];
  renderServices(page);
  focusHeading(page.heading);
}

function buildOverview(operator) {
  const page = { kind: "overview", services: [] };
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
  parts.push(buildServices(page), buildStacks(page), buildDomains(page));
  mount(page, el("div", { id: "overview" }, parts));
  if (view.flash) {
    // What the page the user came from did (a deletion), said here.
    setText($("action-status"), view.flash);
    view.flash = null;
  }
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

function buildStacks(page) {
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
  page.stacks.addEventListener("submit", onDeploy);
  return page.stacks;
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
  // Stack names are lowercase letters, digits and dashes: safe in an id.
  const fileId = "deploy-file-" + stack.name;
  const nameId = "deploy-component-" + stack.name;
  r.component = el("input", { id: nameId, type: "text", autocomplete: "off", spellcheck: "false", required: true });
  const deploy = el(
    "details",
    { class: "deploy" },
    el("summary", null, "Deploy a new version"),
    el(
      "form",
      { class: "deploy-form", "data-deploy": stack.name },
      el(
        "div",
        { class: "field" },
        el("label", { for: fileId }, "Component file (.wasm)"),
        el("input", { id: fileId, type: "file", accept: ".wasm,application/wasm", required: true }),
      ),
      el("div", { class: "field" }, el("label", { for: nameId }, "As component"), r.component),
      el("button", { type: "submit", "data-action": "deploy" }, "Deploy"),
    ),
  );
  const node = el(
    "article",
    { class: "card stack", "data-stack": stack.name },
    el("header", { class: "card-head" }, el("h3", null, stack.name), r.version),
    r.meta,
    r.details,
    deploy,
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
  // The component a new file replaces: the stack's only one, unless the user chose.
  const code = components.filter((c) => c !== "files");
  if (!r.component.value && document.activeElement !== r.component) r.component.value = code[0] || "app";
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


/** Uploads the chosen file and deploys it as a new version of the stack, replacing one component. */
function onDeploy(ev) {
  const form = ev.target.closest("form.deploy-form");
  if (!form) return;
  ev.preventDefault();
  const stack = form.getAttribute("data-deploy");
  const file = form.querySelector("input[type=file]").files[0];
  const component = form.querySelector("input[type=text]").value.trim();
  const button = form.querySelector("button");
  if (!file) {
    actionError("Choose a .wasm file to deploy.");
    return;
  }
  if (!component) {
    actionError("Enter the component the file replaces, such as app.");
    return;
  }
  runAction(button, async () => {
    const info = await api("PUT", "/v1/code?name=" + enc(file.name), undefined, { bytes: file });
    const res = await api("POST", "/v1/stacks/" + enc(stack) + "/deploy", {
      components: { [component]: info.digest },
      replace: false,
    });
    form.reset();
    const holder = form.closest("[data-stack]");
    if (refsOf.get(holder).details.open) loadVersions(holder);
    const version = res.version;
    if (!res.created) return "Already deployed: " + stack + " v" + version.number + " has that code; nothing changed.";
    const restarting = res.restarting && res.restarting.length ? "; restarting " + res.restarting.join(", ") : "";
    return "Deployed " + stack + " v" + version.number + " (" + version.reason + ")" + restarting + ".";
  });
}

// ---------------------------------------------------------------- domains

function buildDomains(page) {
  page.domainList = el("ul", { id: "domain-list", class: "plain" });
  page.domainsEmpty = el(
    "p",
    { class: "empty" },
    "No custom domains. The operator assigns one with ",
    el("code", null, "mesh env update ENV --domain example.com"),
    "; then publish on it with ",
    el("code", null, "mesh svc publish NAME --endpoint https://shop.example.com"),
    ".",
  );
  return el(
    "section",
    { id: "domains", "aria-labelledby": "domains-title" },
    el("h2", { id: "domains-title" }, "Custom domains"),
    page.domainsEmpty,
    page.domainList,
  );
}

function renderDomains(page, env) {
  const certs = (env && env.domain_certificates) || [];
  show(page.domainsEmpty, certs.length === 0);
  sync(
    page.domainList,
    certs,
    (c) => c.domain,
    (c) => el("li", { "data-domain": c.domain }),
    (li, c) =>
      fill(
        li,
        el("span", { class: "mono" }, c.domain),
        " ",
        badge(c.trusted ? "trusted" : "untrusted"),
        " ",
        el("span", { class: "muted" }, "certificate: " + c.certificate),
      ),
  );
}

// ---------------------------------------------------------------- services

const FILTERS = [
  ["all", "All services"],
  ["web", "Web services"],
  ["worker", "Workers"],
  ["cron", "Cron jobs"],
  ["attention", "Needing attention"],
];

function buildServices(page) {
  page.search = el("input", { id: "service-search", type: "search", autocomplete: "off", spellcheck: "false", placeholder: "name, stack or URL" });
  page.filter = el("select", { id: "service-filter" }, FILTERS.map(([v, label]) => el("option", { value: v }, label)));
  page.shown = el("p", { id: "services-shown", class: "muted", role: "status", "aria-live": "polite" });
  page.serviceBody = el("tbody");
  page.serviceWrap = gridTable(
    { id: "service-table", class: "grid services" },
    "Services, one row each",
    ["Service", "Stack", "Type", "Status", "Restarts", "Endpoints or schedule", "Message"],
    page.serviceBody,
  );
  page.servicesEmpty = el("p", { class: "empty" }, "No services yet.");
  for (const control of [page.search, page.filter]) control.addEventListener("input", () => renderServices(page));
  return el(
    "section",
    { id: "services", "aria-labelledby": "services-title" },
    el("h2", { id: "services-title" }, "Services"),
    el(
      "div",
      { class: "controls" },
      el("div", { class: "field" }, el("label", { for: "service-search" }, "Search"), page.search),
      el("div", { class: "field" }, el("label", { for: "service-filter" }, "Show"), page.filter),
    ),
    page.shown,
    page.servicesEmpty,
    page.serviceWrap,
    buildCreateForm(),
  );
}

/** "2/2 running", "0/1 backoff", or for a cron job its last run. */
function statusOf(svc) {
  const list = svc.instances || [];
  if (svc.type === "cron") {
    const last = (svc.runs || [])[0];
    if (!last) return { word: "scheduled", text: "no runs yet", bad: false };
    return { word: last.status, text: "last run " + last.status + " " + ago(last.started_at), bad: /failed|timed_out|crashed/.test(last.status) };
  }
  const wanted = svc.instances_desired ?? 0;
  const running = runningCount(svc);
  const other = list.find((i) => i.state !== "running");
  const word = other ? other.state : wanted === 0 ? "stopped" : "running";
  return { word, text: running + "/" + wanted + " " + word, bad: running < wanted };
}

function needsAttention(svc) {
  return statusOf(svc).bad;
}

function matches(svc, text, filter) {
  if (filter === "attention" && !needsAttention(svc)) return false;
  if (["web", "worker", "cron"].includes(filter) && svc.type !== filter) return false;
  if (!text) return true;
  const hay = [svc.name, svc.stack, svc.stack + "/" + svc.name, svc.type, svc.kind, svc.description, ...(svc.endpoints || [])]
    .join(" ")
    .toLowerCase();
  return text
    .toLowerCase()
    .split(/\s+/)
    .every((word) => hay.includes(word));
}

function renderServices(page) {
  const all = page.services
    .slice()
    .sort((a, b) => String(a.stack).localeCompare(String(b.stack)) || String(a.name).localeCompare(String(b.name)));
  const text = page.search.value.trim();
  const list = all.filter((s) => matches(s, text, page.filter.value));
  show(page.servicesEmpty, all.length === 0);
  show(page.serviceWrap, list.length > 0);
  setText(
    page.shown,
    all.length === 0 ? "" : list.length === all.length ? plural(all.length, "service") + "." : "Showing " + list.length + " of " + plural(all.length, "service") + ".",
  );
  sync(page.serviceBody, list, (s) => s.stack + "/" + s.name, makeServiceRow, updateServiceRow);
}

function makeServiceRow(svc) {
  const cell = (cls, label) => ({ class: cls, "data-label": label });
  const tr = emptyRow(
    { "data-service": svc.stack + "/" + svc.name },
    "name",
    cell("stack", "Stack"),
    cell("type", "Type"),
    cell("status", "Status"),
    cell("restarts num", "Restarts"),
    cell("where", "Endpoints or schedule"),
    cell("message", "Message"),
  );
  tr.cells[0].appendChild(el("a", { href: serviceHref(svc.stack, svc.name) }, svc.name));
  const endpoints = endpointsCell();
  tr.cells[5].append(...endpoints.nodes);
  tr.cells[5].appendChild((tr.scheduleText = el("span", { class: "schedule" })));
  refsOf.set(tr, { endpoints });
  return tr;
}

function updateServiceRow(tr, svc) {
  const c = tr.cells;
  const r = refsOf.get(tr);
  setText(c[1], svc.stack);
  setText(c[2], svc.type + (svc.kind ? " (" + svc.kind + ")" : ""));
  const status = statusOf(svc);
  fill(c[3], badge(status.word), " ", el("span", { class: "status-text" }, status.text));
  setText(c[4], (svc.instances || []).reduce((n, i) => n + (i.restarts || 0), 0));
  const cron = svc.type === "cron";
  updateEndpoints(r.endpoints.list, r.endpoints.none, svc);
  show(r.endpoints.list, !cron && (svc.endpoints || []).length > 0);
  show(r.endpoints.none, !cron && (svc.endpoints || []).length === 0);
  setText(tr.scheduleText, cron ? scheduleText(svc) + (svc.next_run ? ", next " + until(svc.next_run) : "") : "");
  const trouble = (svc.instances || []).find((i) => i.state !== "running" && i.message);
  const lastRun = cron ? (svc.runs || [])[0] : null;
  setText(c[6], trouble ? trouble.message : lastRun && lastRun.message ? lastRun.message : svc.description || "");
}

// ---------------------------------------------------------------- creating a service

/** Words as a shell would split them: spaces separate, quotes group. */
export function splitWords(text) {
  const words = [];
  let word = "";
  let quote = null;
  let inWord = false;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = null;
      else word += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += ch;
      inWord = true;
    }
  }
  if (quote) throw new Error("The command has an unclosed quote.");
  if (inWord) words.push(word);
  return words;
}

function buildCreateForm() {
  const form = el(
    "form",
    { id: "create-form", class: "action create-form" },
    field("create-name", "Name", { type: "text", required: true, placeholder: "worker" }),
    field("create-stack", "Stack", { type: "text", value: "app" }),
    field("create-command", "Command", { type: "text", required: true, placeholder: "app queue" }),
    field("create-instances", "Instances", { type: "number", min: "0", step: "1", value: "1", inputmode: "numeric" }),
    field("create-endpoint", "Publish at (optional)", { type: "text", placeholder: "www" }),
    field("create-schedule", "Schedule (optional, makes a cron job)", { type: "text", placeholder: "*/5 * * * *" }),
    el("button", { id: "create-button", type: "submit" }, "Create service"),
  );
  form.addEventListener("submit", onCreate);
  return el("details", { id: "create", class: "create" }, el("summary", null, "New service"), form);
}

function onCreate(ev) {
  ev.preventDefault();
  const value = (id) => $(id).value.trim();
  const name = value("create-name");
  const stack = value("create-stack") || "app";
  let command;
  try {
    command = splitWords(value("create-command"));
  } catch (e) {
    actionError(e.message);
    return;
  }
  const instances = Number(value("create-instances") || "1");
  const endpoint = value("create-endpoint");
  const schedule = value("create-schedule");
  if (!name || command.length === 0) {
    actionError("Enter a name and a command (a component of the stack, then its arguments).");
    (name ? $("create-command") : $("create-name")).focus();
    return;
  }
  if (!Number.isInteger(instances) || instances < 0) {
    actionError("Enter a whole number of instances, 0 or more.");
    $("create-instances").focus();
    return;
  }
  runAction($("create-button"), async () => {
    const body = { name, stack, command };
    if (schedule) body.schedule = schedule;
    else body.instances = instances;
    const svc = await api("POST", "/v1/services", body);
    let published = "";
    if (endpoint) {
      const after = await api("POST", "/v1/services/" + enc(stack) + "/" + enc(name) + "/publish", { endpoint, path: null });
      published = " at " + (after.endpoints || []).join(", ");
    }
    $("create-form").reset();
    return "Created " + svc.type + " " + stack + "/" + name + published + ".";
  });
}
