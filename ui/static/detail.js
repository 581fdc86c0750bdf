// The selected saga of the model on show: its head, its actions (run again, edit and run,
// compare, retry), its flow, the rows the services hold with the verdict, and its timeline.

import { serviceStates, flowDiagram, renderEvents, summary as choreographySummary } from "./choreography.js";
import { $, FINISHED, MODELS, api, badge, el, page, rowValue, state, stepsOf, upper } from "./core.js";
import { loadIntoForm, startSaga, freshInput } from "./form.js";
import { diagram, renderTimeline, stepStates, summary as orchestrationSummary } from "./orchestration.js";

let shown = null; // { model, saga } as last drawn, for the actions

const UNKNOWN_RECORDS = { rows: {}, verdict: "unknown", problems: ["could not ask"] };

// A saga and its rows, or { missing } when there is no such saga (yet), or null when unanswered.
export async function fetchSaga(model, sagaId) {
  try {
    if (model === "choreography" && state.fresh.has(sagaId) && !(await observerKnows(sagaId))) {
      return { missing: true };
    }
    const saga = await api(MODELS[model].saga(sagaId));
    if (!saga.ok) return saga.status === 404 ? { missing: true } : null;
    const records = await api(MODELS[model].records(sagaId));
    return { saga: saga.body, records: records.ok ? records.body : UNKNOWN_RECORDS };
  } catch (_) {
    return null;
  }
}

// The observer learns of a choreographed sign-up a moment after it was taken in: until it
// lists it among the newest, the page waits rather than ask for it and be answered 404.
async function observerKnows(sagaId) {
  const answer = await api(`${MODELS.choreography.list}?limit=50`);
  const known = answer.ok && answer.body.sagas.some((s) => s.saga_id === sagaId);
  const tries = (state.fresh.get(sagaId) || 0) + 1;
  if (known || tries > 10) state.fresh.delete(sagaId); // not listed after 10 s: ask for it all the same
  else state.fresh.set(sagaId, tries);
  return known;
}

// Steps, their states and the words and picture for either model.
export function describe(model, saga, records) {
  const rows = records.rows || {};
  if (model === "orchestration") {
    const steps = stepsOf(model, saga, rows);
    const states = stepStates(saga, steps, rows);
    return { steps, states, summary: orchestrationSummary(saga, steps),
             picture: () => diagram(saga, steps, states) };
  }
  const steps = stepsOf(model, saga);
  const byName = serviceStates(state.flow, saga);
  return { steps, states: steps.map((s) => byName[s.name]), summary: choreographySummary(saga, state.flow),
           picture: () => flowDiagram(state.flow, saga, byName) };
}

export function stepStateItems(steps, states) {
  return steps.map((step, i) => el("li", { class: `badge st-${states[i]}`, "data-step": step.name,
                                           "data-state": states[i],
                                           text: `${upper(step.name)}${step.kind ? ` (${step.kind})` : ""}: ${states[i]}` }));
}

export async function refreshDetail() {
  const model = state.model;
  const sagaId = state.selected[model];
  if (!sagaId) {
    showEmpty("Start a saga or pick one from the list.");
    return;
  }
  const fetched = await fetchSaga(model, sagaId);
  if (!fetched || model !== state.model || sagaId !== state.selected[model]) return;
  if (fetched.missing) {
    showEmpty(model === "choreography" ? `The observer has not seen saga ${sagaId} yet…` : `No saga ${sagaId}.`);
    return;
  }
  render(model, fetched.saga, fetched.records);
}

function showEmpty(text) {
  shown = null;
  $("#detail-empty").textContent = text;
  $("#detail-empty").hidden = false;
  $("#detail").hidden = true;
}

function render(model, saga, records) {
  shown = { model, saga };
  const { steps, states, summary, picture } = describe(model, saga, records);
  const detail = $("#detail");
  $("#detail-empty").hidden = true;
  detail.hidden = false;
  Object.assign(detail.dataset, { model, saga: saga.saga_id, status: saga.status });
  $("#detail-id").textContent = saga.saga_id;
  $("#detail-status").replaceWith(Object.assign(badge(saga.status), { id: "detail-status" }));
  $("#detail-model").textContent = MODELS[model].adjective;
  $("#detail-summary").textContent = summary;
  const finished = FINISHED.has(saga.status);
  $("#run-again").hidden = !finished || !saga.input;
  $("#edit-run").hidden = !finished || !saga.input;
  $("#retry").hidden = model !== "orchestration" || saga.status !== "COMPENSATION_FAILED";
  $("#diagram").innerHTML = picture();
  $("#diagram").setAttribute("aria-label", `${MODELS[model].label} flow: ` +
    steps.map((s, i) => `${upper(s.name)} ${states[i]}`).join(", "));
  $("#step-states").replaceChildren(...stepStateItems(steps, states));
  renderRows(steps, records);
  $("#orchestration-timeline").hidden = model !== "orchestration";
  $("#choreography-timeline").hidden = model !== "choreography";
  if (model === "orchestration") renderTimeline(saga.events);
  else renderEvents(saga.events);
}

export const VERDICT_WORDS = {
  consistent: "Consistent: the rows agree with how the saga ended.", inconsistent: "Inconsistent: ",
  in_progress: "In progress: the saga has not finished yet.",
  unknown: "Unknown: a service did not answer, so its row cannot be checked.",
};

export function verdictText(records) {
  return VERDICT_WORDS[records.verdict] + (records.verdict === "inconsistent" ? records.problems.join("; ") : "");
}

function renderRows(steps, records) {
  const verdict = $("#verdict");
  verdict.className = `verdict ${records.verdict}`;
  verdict.dataset.verdict = records.verdict;
  verdict.textContent = verdictText(records);
  $("#rows").replaceChildren(...steps.map((step) => {
    const row = records.rows?.[step.name];
    const cells = row === null ? ["no row", "", ""]
      : row === undefined || row.unreachable ? ["service not answering", "", ""]
      : [row.status, rowValue(step, row), new Date(row.updated_at).toLocaleTimeString()];
    return el("tr", { "data-step": step.name }, el("td", { text: upper(step.name) }),
              ...cells.map((c) => el("td", { text: c })));
  }));
}

// ---- actions -------------------------------------------------------------------------

function say(text, error = false) {
  const result = $("#action-result");
  result.className = error ? "error" : "";
  result.textContent = text;
}

// Start the same input with the same faults again, in the same model; show it, unless
// `follow` is false (then it is only selected for when that model is shown).
export async function runAgain(model, saga, report = say, follow = true) {
  report("Starting it again…");
  const started = await startSaga(model, freshInput(saga.input), saga.fail || {});
  if (started.error) {
    report(`Not started again: ${started.error}`, true);
    return null;
  }
  report(`Started saga ${started.sagaId} again: the same input and faults, ${MODELS[model].adjective}.`);
  if (follow) await page.select(model, started.sagaId);
  else state.selected[model] = started.sagaId;
  return started.sagaId;
}

async function retryCompensation() {
  const sagaId = state.selected.orchestration;
  say("Retrying…");
  try {
    const answer = await api(`/sagas/${sagaId}/retry`, { method: "POST", headers: { Prefer: "respond-async" } });
    say(answer.status === 202 ? "Compensation resumed (injected faults cleared)."
      : `Not retried: ${answer.body.error?.message || `HTTP ${answer.status}`}`, answer.status !== 202);
  } catch (_) {
    say("Not retried: the orchestrator is not answering.", true);
  }
  await refreshDetail();
}

export function wireDetail(openCompare) {
  $("#run-again").addEventListener("click", () => shown && runAgain(shown.model, shown.saga));
  $("#edit-run").addEventListener("click", () => shown && loadIntoForm(shown.model, shown.saga));
  $("#compare-open").addEventListener("click", () => shown && openCompare(shown.model, shown.saga));
  $("#retry").addEventListener("click", retryCompensation);
}

export const clearActionResult = () => say("");
