// The dashboard: start sagas in either model, watch the list, one saga's flow, its rows, the
// charts and the log, live. Plain browser JavaScript (ES modules), no build step; everything
// comes from the orchestrator's JSON API, the saga's steps included (GET /definition).

import { refreshCharts } from "./charts.js";
import { refreshDeadLetters } from "./choreography.js";
import { closeCompare, openCompare, refreshCompare } from "./compare.js";
import { $, MODELS, api, badge, el, faultText, page, renderBanner, state, upper } from "./core.js";
import { clearActionResult, refreshDetail, wireDetail } from "./detail.js";
import { buildForModel, buildInputs, wireForm } from "./form.js";

const POLL_MS = 1000;
const SLOW_POLL_MS = 5000; // the charts and the dead letters
const MODEL_NOTES = {
  orchestration: "Orchestration: the orchestrator calls each service in turn, logging every step " +
    "before it acts, and when a step fails for good it undoes the steps in reverse.",
  choreography: "Choreography: no coordinator. Each service reacts to the previous one's event and " +
    "publishes its own; a failure travels back as events and each service undoes itself. An observer " +
    "beside this page follows the events.",
};
let logState = { seq: 0, filter: "" };

// ---- the two models ------------------------------------------------------------------

async function setModel(model) {
  if (!state.flow && model === "choreography") return;
  const changed = model !== state.model;
  state.model = model;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.model === model;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  const panel = $("#model-panel");
  panel.dataset.model = model;
  panel.setAttribute("aria-labelledby", `tab-${model}`);
  $("#model-note").textContent = MODEL_NOTES[model];
  if (!changed && $("#fault-rows").childElementCount) return;
  buildForModel(model);
  $("#dead-letters-box").hidden = true;
  clearActionResult();
  await Promise.all([refreshList(), refreshDetail(), refreshCharts(),
                     model === "choreography" ? refreshDeadLetters() : null]);
}

function wireTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) tab.addEventListener("click", () => setModel(tab.dataset.model));
  $("[role=tablist]").addEventListener("keydown", (event) => {
    const at = tabs.indexOf(document.activeElement);
    if (at < 0) return;
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    const tab = tabs[(to + tabs.length) % tabs.length];
    tab.focus();
    setModel(tab.dataset.model);
  });
}

async function select(model, sagaId) {
  state.selected[model] = sagaId;
  if (model !== state.model) {
    await setModel(model);
    return;
  }
  for (const button of document.querySelectorAll("#saga-list button")) {
    button.setAttribute("aria-current", String(button.dataset.saga === sagaId));
  }
  await Promise.all([refreshDetail(), refreshList()]);
}

// ---- the saga list -------------------------------------------------------------------

async function refreshList() {
  const model = state.model;
  const filter = $("#status-filter").value;
  let body;
  try {
    const answer = await api(`${MODELS[model].list}?limit=50${filter ? `&status=${filter}` : ""}`);
    if (!answer.ok || model !== state.model) return;
    body = answer.body;
  } catch (_) { return; /* the banner says so */ }
  state.lists[model] = body.sagas;
  const list = $("#saga-list");
  // Re-draw only when something changed, and give focus back to the row that had it,
  // so that a keyboard user is not thrown out of the list every second.
  const signature = JSON.stringify([model, state.selected[model], body.sagas.map((s) => [s.saga_id, s.status])]);
  if (signature === list.dataset.signature) return;
  list.dataset.signature = signature;
  const focused = document.activeElement?.closest?.("#saga-list button")?.dataset.saga;
  const firstField = state.definition.input_fields[0];
  list.replaceChildren(...body.sagas.map((saga) => {
    const when = new Date(saga.created_at).toLocaleTimeString();
    const who = saga.input ? saga.input[firstField] ?? "" : "(sign-up not seen yet)";
    const button = el("button", { type: "button", "data-saga": saga.saga_id,
                                  "aria-current": String(saga.saga_id === state.selected[model]) },
      el("span", { class: "who", text: who }), badge(saga.status),
      el("span", { class: "meta", text: `${when} · ${faultText(saga.fail)} · ${saga.saga_id.slice(-8)}` }));
    button.addEventListener("click", () => {
      clearActionResult();
      select(model, saga.saga_id);
    });
    return el("li", {}, button);
  }));
  if (!body.sagas.length) list.append(el("li", { class: "empty", text: `No ${MODELS[model].adjective} sagas yet.` }));
  if (focused) list.querySelector(`button[data-saga="${focused}"]`)?.focus();
}

// ---- health, consistency -------------------------------------------------------------

async function refreshServices() {
  try {
    const { body } = await api("/services");
    const list = $("#services");
    list.replaceChildren();
    state.servicesDown = [];
    for (const [name, info] of Object.entries(body.services || {})) {
      const up = info.status === "ok";
      if (!up) state.servicesDown.push(name);
      list.append(el("li", { class: up ? "up" : "down", "data-service": name,
                             text: `Service ${upper(name)}: ${up ? "up" : "down"}` }));
    }
    renderBanner();
  } catch (_) { /* the banner already says the orchestrator is down */ }
}

async function checkConsistency() {
  const result = $("#check-result");
  result.className = "check-result";
  result.textContent = "Checking every saga of both models against the services' rows…";
  // A page at a time (the orchestrator checks a bounded number of sagas per request).
  const total = { checked: 0, in_progress: 0, violations: [], needs_attention: [] };
  let after = "";
  try {
    for (;;) {
      const { body } = await api(`/consistency${after ? `?after=${encodeURIComponent(after)}` : ""}`);
      if (body.unreachable) {
        result.className = "check-result bad";
        result.textContent = `Could not check: ${body.unreachable.join("; ")}`;
        return;
      }
      for (const key of ["checked", "in_progress"]) total[key] += body[key];
      total.violations.push(...body.violations);
      total.needs_attention.push(...body.needs_attention);
      if (body.next === null) break;
      after = body.next;
    }
    const ok = total.violations.length === 0;
    result.className = `check-result ${ok ? "ok" : "bad"}`;
    result.textContent = `${total.checked} sagas checked: ${total.violations.length} violation(s)` +
      `, ${total.needs_attention.length} needing attention, ${total.in_progress} in progress.` +
      total.violations.slice(0, 5).map((v) => ` ${v.saga_id.slice(-8)}: ${v.detail}.`).join("") +
      total.needs_attention.slice(0, 3).map((n) => ` ${n.saga_id.slice(-8)} needs attention: ${n.reason}.`).join("");
  } catch (_) { result.textContent = "Could not check: the orchestrator is not answering."; }
}

// ---- logs ----------------------------------------------------------------------------

async function refreshLogs() {
  const { filter } = logState;
  const query = `/logs?after=${logState.seq}${filter ? `&saga_id=${encodeURIComponent(filter)}` : ""}`;
  try {
    const { ok, body } = await api(query);
    if (!ok || filter !== logState.filter) return;
    const log = $("#log");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    for (const line of body.lines) {
      log.append(el("span", { class: line.level, text: `${line.at.slice(11, 23)} ${line.level} ${line.message}\n` }));
    }
    while (log.childNodes.length > 500) log.firstChild.remove();
    logState.seq = body.last;
    if (atBottom) log.scrollTop = log.scrollHeight;
  } catch (_) { /* banner */ }
}

function setLogFilter(value) {
  logState = { seq: 0, filter: value.trim() };
  $("#log-filter").value = logState.filter;
  $("#log").replaceChildren();
  refreshLogs();
}

// ---- wiring --------------------------------------------------------------------------

async function loadDefinition() {
  for (;;) {
    try {
      const answer = await api("/definition");
      if (answer.ok) return answer.body;
    } catch (_) { /* the banner says so; try again */ }
    await new Promise((resolve) => setTimeout(resolve, 2 * POLL_MS));
  }
}

async function loadFlow() {
  try {
    const answer = await api("/choreography/flow");
    if (answer.ok) return answer.body;
  } catch (_) { /* below */ }
  const tab = $("#tab-choreography");
  tab.setAttribute("aria-disabled", "true");
  tab.title = "The choreography's flow could not be read from this system.";
  return null;
}

function describeSaga(definition) {
  const steps = definition.steps.map((s) => `${upper(s.name)}: ${s.action}`).join(" → ");
  $("#lede").textContent = `A sign-up as a saga (${definition.name}@${definition.version}, ` +
    `${definition.description}): ${steps}. The same steps run in two models; pick one below.`;
}

// Run `work` now and again `ms` after each run ends (never two at once), whatever it threw.
function every(ms, work) {
  const run = async () => {
    try {
      await work();
    } finally {
      setTimeout(run, ms);
    }
  };
  run();
}

async function main() {
  Object.assign(page, { select, setModel });
  wireTabs();
  wireForm();
  wireDetail(openCompare);
  $("#compare-close").addEventListener("click", closeCompare);
  $("#status-filter").addEventListener("change", refreshList);
  $("#check").addEventListener("click", checkConsistency);
  $("#log-filter").addEventListener("change", (event) => setLogFilter(event.target.value));
  $("#log-follow-selected").addEventListener("click", () => setLogFilter(state.selected[state.model] || ""));
  $("#log-clear-filter").addEventListener("click", () => setLogFilter(""));
  // Ready once what sits above the buttons has loaded too: a list that fills in later would
  // move them under a click.
  [state.definition, state.flow] = await Promise.all([loadDefinition(), loadFlow(), refreshServices()]);
  setInterval(refreshServices, 3 * POLL_MS);
  describeSaga(state.definition);
  buildInputs();
  await setModel("orchestration");
  document.body.dataset.ready = "true";
  every(POLL_MS, () => Promise.all([refreshList(), refreshDetail(), refreshLogs(), refreshCompare()]));
  every(SLOW_POLL_MS, () => Promise.all([refreshCharts(),
                                         state.model === "choreography" ? refreshDeadLetters() : null]));
}

main();
