// The dashboard: start sagas, watch the list, one saga's flow, its rows and the log, live.
// Plain browser JavaScript, no build step; everything comes from the orchestrator's JSON API.
"use strict";

const STEPS = ["a", "b", "c"];
const POLL_MS = 1000;
const FINISHED = new Set(["COMPLETED", "COMPENSATED", "COMPENSATION_FAILED"]);
const state = { selected: null, definition: null, logSeq: 0, logFilter: "", orchestratorDown: false, servicesDown: [] };

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    setOrchestratorDown(true);
    throw error;
  }
  setOrchestratorDown(false);
  const body = await response.json().catch(() => ({}));
  return { ok: response.ok, status: response.status, body };
}

// ---- health banner -------------------------------------------------------------------

function setOrchestratorDown(down) {
  state.orchestratorDown = down;
  renderBanner();
}

function renderBanner() {
  const banner = $("#banner");
  let text = "";
  if (state.orchestratorDown) {
    text = "The orchestrator is not answering. Retrying every second; what is shown may be stale.";
  } else if (state.servicesDown.length) {
    const names = state.servicesDown.map((s) => s.toUpperCase()).join(", ");
    text = `Service ${names} is not answering. Sagas that reach it retry, then compensate; its rows cannot be shown.`;
  }
  banner.textContent = text;
  banner.hidden = !text;
}

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
                             text: `Service ${name.toUpperCase()}: ${up ? "up" : "down"}` }));
    }
    renderBanner();
  } catch (_) { /* the banner already says the orchestrator is down */ }
}

// ---- starting sagas ------------------------------------------------------------------

function slowDelay() {
  const timeoutMs = (state.definition?.call_timeout || 5) * 1000;
  return Math.round(Math.min(1500, timeoutMs * 0.6));
}

const SCENARIOS = {
  success: () => ({}),
  "fail-a": () => ({ a: "before_commit" }),
  "fail-b": () => ({ b: "before_commit" }),
  "fail-c": () => ({ c: "before_commit" }),
  "after-commit": () => ({ b: "after_commit" }),
  timeout: () => ({ b: "timeout" }),
  transient: () => ({ b: "transient:2" }),
  "compensation-failed": () => ({ b: "compensate_fail", c: "before_commit" }),
  slow: () => Object.fromEntries(STEPS.map((s) => [s, `delay:${slowDelay()}`])),
};

function fillFaultSelectors(modes) {
  for (const step of STEPS) {
    const select = document.querySelector(`select[name=fail_${step}]`);
    select.replaceChildren(el("option", { value: "", text: "no fault" }));
    for (const mode of modes) select.append(el("option", { value: mode, text: mode }));
    select.addEventListener("change", () => showAmount(step));
    showAmount(step);
  }
}

function showAmount(step) {
  const mode = document.querySelector(`select[name=fail_${step}]`).value;
  document.querySelector(`.fault-row[data-step=${step}] .amount`).hidden = !mode.endsWith(":N");
}

function faultsFromForm(form) {
  const fail = {};
  for (const step of STEPS) {
    const mode = form.elements[`fail_${step}`].value;
    if (mode) fail[step] = mode.replace(":N", `:${form.elements[`n_${step}`].value}`);
  }
  return fail;
}

function showFaultsInForm(form, fail) {
  for (const step of STEPS) {
    const mode = fail[step] || "";
    const [kind, amount] = mode.split(":");
    form.elements[`fail_${step}`].value = amount ? `${kind}:N` : kind;
    if (amount) form.elements[`n_${step}`].value = amount;
    showAmount(step);
  }
}

async function startSaga(fail) {
  const form = $("#start-form");
  const result = $("#start-result");
  const body = { username: form.elements.username.value, address: form.elements.address.value,
                 payment: form.elements.payment.value, fail };
  result.className = "result";
  result.textContent = "Starting…";
  try {
    const answer = await api("/start", {
      method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Prefer: "respond-async" },
    });
    if (!answer.ok) {
      result.className = "result error";
      result.textContent = `Not started: ${answer.body.error?.message || `HTTP ${answer.status}`}`;
      return;
    }
    result.textContent = `Started saga ${answer.body.saga_id}.`;
    await select(answer.body.saga_id);
    await refreshList();
  } catch (_) {
    result.className = "result error";
    result.textContent = "Not started: the orchestrator is not answering.";
  }
}

// ---- the saga list -------------------------------------------------------------------

function badge(status) {
  return el("span", { class: `badge s-${status}`, text: status.replace("_", " ") });
}

async function refreshList() {
  const filter = $("#status-filter").value;
  try {
    const { ok, body } = await api(`/sagas?limit=50${filter ? `&status=${filter}` : ""}`);
    if (!ok) return;
    const list = $("#saga-list");
    // Re-draw only when something changed, and give focus back to the row that had it,
    // so that a keyboard user is not thrown out of the list every second.
    const signature = JSON.stringify([state.selected, body.sagas.map((s) => [s.saga_id, s.status])]);
    if (signature === list.dataset.signature) return;
    list.dataset.signature = signature;
    const focused = document.activeElement?.closest?.("#saga-list button")?.dataset.saga;
    list.replaceChildren(...body.sagas.map((saga) => {
      const when = new Date(saga.created_at).toLocaleTimeString();
      const faults = Object.entries(saga.fail).map(([s, m]) => `${s}=${m}`).join(" ") || "no faults";
      const button = el("button", { type: "button", "data-saga": saga.saga_id,
                                    "aria-current": String(saga.saga_id === state.selected) },
        el("span", { class: "who", text: saga.input.username }), badge(saga.status),
        el("span", { class: "meta", text: `${when} · ${faults} · ${saga.saga_id.slice(-8)}` }));
      button.addEventListener("click", () => select(saga.saga_id));
      return el("li", {}, button);
    }));
    if (!body.sagas.length) list.append(el("li", { class: "empty", text: "No sagas yet." }));
    if (focused) list.querySelector(`button[data-saga="${focused}"]`)?.focus();
  } catch (_) { /* banner */ }
}

// ---- one saga ------------------------------------------------------------------------

async function select(sagaId) {
  state.selected = sagaId;
  for (const button of document.querySelectorAll("#saga-list button")) {
    button.setAttribute("aria-current", String(button.dataset.saga === sagaId));
  }
  await refreshDetail();
}

// What each step went through, from the log (and, for an undone step, from its row).
function stepStates(saga, rows) {
  return STEPS.map((step, index) => {
    const events = saga.events.filter((e) => e.step === step);
    const invoked = events.some((e) => e.action === "invoke" && e.outcome === "ok");
    const undone = events.some((e) => e.action === "compensate" && e.outcome === "ok");
    const here = saga.current_step === index;
    if (undone) return rows?.[step]?.status === "CANCELLED" ? "cancelled" : "compensated";
    if (saga.status === "COMPENSATING" && here) return "compensating";
    if (saga.status === "COMPENSATION_FAILED" && here) return "failed";
    if (saga.failed_step === step) return "failed";
    if (invoked) return "applied";
    if (saga.status === "RUNNING" && here) return "running";
    return "pending";
  });
}

const STATE_COLOURS = {
  pending: ["#eef0f3", "#6e7781"], running: ["#ddeeff", "#0b5cad"], applied: ["#dafbe1", "#1a7f37"],
  failed: ["#fee4e2", "#b42318"], compensating: ["#fff4ce", "#9a6700"], compensated: ["#f1e8ff", "#8250df"],
  cancelled: ["#f1e8ff", "#8250df"],
};

function diagram(saga, states) {
  const names = ["Orchestrator", "Service A", "Service B", "Service C"];
  const x = (i) => 10 + i * 205;
  const w = 120;
  const order = saga.events.filter((e) => e.action === "compensate" && e.outcome === "ok").map((e) => e.step);
  let svg = `<svg viewBox="0 0 760 150" xmlns="http://www.w3.org/2000/svg">
    <defs><marker id="fwd" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
      <path d="M0,0 L10,5 L0,10 z" fill="#0b5cad"/></marker>
      <marker id="back" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
      <path d="M0,0 L10,5 L0,10 z" fill="#8250df"/></marker></defs>`;
  names.forEach((name, i) => {
    const stepState = i === 0 ? saga.status.toLowerCase() : states[i - 1];
    const [fill, ink] = i === 0 ? ["#fff", "#1d2330"] : STATE_COLOURS[stepState];
    svg += `<g class="node" data-node="${i === 0 ? "orchestrator" : STEPS[i - 1]}">
      <rect x="${x(i)}" y="20" width="${w}" height="72" rx="10" fill="${fill}" stroke="${ink}"/>
      <text x="${x(i) + w / 2}" y="52" text-anchor="middle" fill="${ink}">${name}</text>
      <text class="label" x="${x(i) + w / 2}" y="72" text-anchor="middle">${stepState.replace("_", " ")}</text></g>`;
  });
  STEPS.forEach((step, i) => {
    const from = x(i) + w;
    const to = x(i + 1);
    const reached = states[i] !== "pending";
    svg += `<line x1="${from}" y1="42" x2="${to - 2}" y2="42" stroke="${reached ? "#0b5cad" : "#c4c9d0"}"
      stroke-width="2" marker-end="url(#fwd)"/>
      <text class="label" x="${(from + to) / 2}" y="34" text-anchor="middle">${i + 1}. invoke ${step.toUpperCase()}</text>`;
    const position = order.indexOf(step);
    const active = states[i] === "compensating";
    if (position >= 0 || active) {
      svg += `<line class="compensation" data-step="${step}" x1="${to}" y1="72" x2="${from + 2}" y2="72"
        stroke="#8250df" stroke-width="2" ${active ? 'stroke-dasharray="5 4"' : ""} marker-end="url(#back)"/>
        <text class="label" x="${(from + to) / 2}" y="88" text-anchor="middle">${
          position >= 0 ? `${position + 1}. undo ${step.toUpperCase()}` : `undoing ${step.toUpperCase()}`}</text>`;
    }
  });
  svg += `<text class="label" x="380" y="125" text-anchor="middle">Steps run left to right; compensations (purple) run right to left, starting with the failed step.</text></svg>`;
  return svg;
}

function summary(saga) {
  switch (saga.status) {
    case "COMPLETED": return "Every step applied: the account, the address and the payment method exist.";
    case "COMPENSATED": return `Step ${saga.failed_step.toUpperCase()} failed (${saga.reason}); every step was undone in reverse. ${saga.error || ""}`;
    case "COMPENSATION_FAILED": return `Step ${saga.failed_step.toUpperCase()} failed, and a compensation could not be completed: the saga needs attention. ${saga.compensation_error || ""}`;
    case "COMPENSATING": return `Step ${(saga.failed_step || "").toUpperCase()} failed; undoing steps in reverse…`;
    default: return `Running step ${STEPS[saga.current_step]?.toUpperCase() || ""}…`;
  }
}

async function refreshDetail() {
  const sagaId = state.selected;
  if (!sagaId) return;
  let saga, records;
  try {
    [saga, records] = await Promise.all([api(`/sagas/${sagaId}`), api(`/sagas/${sagaId}/records`)]);
  } catch (_) { return; }
  if (sagaId !== state.selected || !saga.ok) return;
  const data = saga.body;
  const rows = records.ok ? records.body.rows : {};
  const states = stepStates(data, rows);
  $("#detail-empty").hidden = true;
  $("#detail").hidden = false;
  $("#detail").dataset.saga = sagaId;
  $("#detail").dataset.status = data.status;
  $("#detail-id").textContent = sagaId;
  $("#detail-status").replaceWith(Object.assign(badge(data.status), { id: "detail-status" }));
  $("#detail-summary").textContent = summary(data);
  $("#diagram").innerHTML = diagram(data, states);
  $("#step-states").replaceChildren(...STEPS.map((step, i) =>
    el("li", { class: `badge st-${states[i]}`, "data-step": step, "data-state": states[i],
               text: `${step.toUpperCase()}: ${states[i]}` })));
  $("#retry").hidden = data.status !== "COMPENSATION_FAILED";
  renderRows(rows, records.ok ? records.body : { verdict: "unknown", problems: ["could not ask"] });
  renderTimeline(data.events);
}

function renderRows(rows, records) {
  const verdict = $("#verdict");
  const words = { consistent: "Consistent: the rows agree with how the saga ended.",
                  inconsistent: "Inconsistent: ", in_progress: "In progress: the saga has not finished yet.",
                  unknown: "Unknown: a service did not answer, so its row cannot be checked." };
  verdict.className = `verdict ${records.verdict}`;
  verdict.dataset.verdict = records.verdict;
  verdict.textContent = words[records.verdict] + (records.verdict === "inconsistent" ? records.problems.join("; ") : "");
  $("#rows").replaceChildren(...STEPS.map((step) => {
    const row = rows?.[step];
    const cells = row === null ? ["no row", "", ""]
      : row === undefined || row.unreachable ? ["service not answering", "", ""]
      : [row.status, row.username ?? row.address ?? row.payment ?? "", new Date(row.updated_at).toLocaleTimeString()];
    return el("tr", { "data-step": step }, el("td", { text: step.toUpperCase() }), ...cells.map((c) => el("td", { text: c })));
  }));
}

function renderTimeline(events) {
  $("#timeline").replaceChildren(...events.map((e, i) => el("tr", { class: `o-${e.outcome}` },
    ...[i + 1, e.step.toUpperCase(), e.action, e.attempt, e.http_status ?? "—", e.outcome, `${e.latency_ms} ms`]
      .map((c) => el("td", { text: String(c) })),
    el("td", { class: "err", text: e.error || "" }))));
}

async function retryCompensation() {
  const sagaId = state.selected;
  const result = $("#retry-result");
  result.textContent = "Retrying…";
  try {
    const answer = await api(`/sagas/${sagaId}/retry`, { method: "POST", headers: { Prefer: "respond-async" } });
    result.textContent = answer.status === 202 ? "Compensation resumed (injected faults cleared)."
      : `Not retried: ${answer.body.error?.message || `HTTP ${answer.status}`}`;
  } catch (_) {
    result.textContent = "Not retried: the orchestrator is not answering.";
  }
  await refreshDetail();
}

async function checkConsistency() {
  const result = $("#check-result");
  result.className = "check-result";
  result.textContent = "Checking every saga against A, B and C…";
  try {
    const { body } = await api("/consistency");
    if (!body.complete) {
      result.className = "check-result bad";
      result.textContent = `Could not check: ${body.unreachable.join("; ")}`;
      return;
    }
    result.className = `check-result ${body.ok ? "ok" : "bad"}`;
    result.textContent = `${body.checked} finished sagas checked: ${body.violations.length} violation(s)` +
      `, ${body.needs_attention.length} needing attention, ${body.in_progress} in progress.` +
      body.violations.slice(0, 5).map((v) => ` ${v.saga_id.slice(-8)}: ${v.detail}.`).join("");
  } catch (_) { result.textContent = "Could not check: the orchestrator is not answering."; }
}

// ---- logs ----------------------------------------------------------------------------

async function refreshLogs() {
  const filter = state.logFilter;
  const query = `/logs?after=${state.logSeq}${filter ? `&saga_id=${encodeURIComponent(filter)}` : ""}`;
  try {
    const { ok, body } = await api(query);
    if (!ok || filter !== state.logFilter) return;
    const log = $("#log");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    for (const line of body.lines) {
      log.append(el("span", { class: line.level, text: `${line.at.slice(11, 23)} ${line.level} ${line.message}\n` }));
    }
    while (log.childNodes.length > 500) log.firstChild.remove();
    state.logSeq = body.last;
    if (atBottom) log.scrollTop = log.scrollHeight;
  } catch (_) { /* banner */ }
}

function setLogFilter(value) {
  state.logFilter = value.trim();
  $("#log-filter").value = state.logFilter;
  state.logSeq = 0;
  $("#log").replaceChildren();
  refreshLogs();
}

// ---- wiring --------------------------------------------------------------------------

async function main() {
  try {
    state.definition = (await api("/definition")).body;
  } catch (_) {
    state.definition = { fault_modes: ["before_commit", "after_commit", "timeout", "delay:N", "transient:N",
                                       "compensate_fail", "compensate_transient:N"], call_timeout: 5 };
  }
  fillFaultSelectors(state.definition.fault_modes);
  const form = $("#start-form");
  form.addEventListener("submit", (event) => { event.preventDefault(); startSaga(faultsFromForm(form)); });
  for (const button of document.querySelectorAll("[data-scenario]")) {
    button.addEventListener("click", () => {
      const fail = SCENARIOS[button.dataset.scenario]();
      showFaultsInForm(form, fail);
      startSaga(fail);
    });
  }
  $("#status-filter").addEventListener("change", refreshList);
  $("#retry").addEventListener("click", retryCompensation);
  $("#check").addEventListener("click", checkConsistency);
  $("#log-filter").addEventListener("change", (event) => setLogFilter(event.target.value));
  $("#log-follow-selected").addEventListener("click", () => setLogFilter(state.selected || ""));
  $("#log-clear-filter").addEventListener("click", () => setLogFilter(""));
  const tick = async () => {
    await Promise.all([refreshList(), refreshDetail(), refreshLogs()]);
    setTimeout(tick, POLL_MS);
  };
  refreshServices();
  setInterval(refreshServices, 3 * POLL_MS);
  tick();
}

main();
