// The same faults, both models, side by side: the saga the comparison was opened from, and the
// newest saga of the other model with exactly the same faults (if there is one, it can be run).

import { eventLines } from "./choreography.js";
import { $, FINISHED, MODELS, api, badge, duration, el, faultText, page, sameFaults } from "./core.js";
import { describe, fetchSaga, runAgain, stepStateItems, verdictText } from "./detail.js";
import { loadIntoForm } from "./form.js";
import { timelineLines } from "./orchestration.js";

const ORDER = ["orchestration", "choreography"];
const NEWEST = 50;
let anchor = null; // { model, saga } the comparison was opened from

export function openCompare(model, saga) {
  anchor = { model, saga };
  $("#compare").hidden = false;
  $("#compare-columns").dataset.signature = "";
  refreshCompare();
  $("#compare").scrollIntoView({ block: "start" });
  $("#compare-title").focus({ preventScroll: true });
}

export function closeCompare() {
  anchor = null;
  $("#compare").hidden = true;
  $("#compare-open").focus();
}

async function newestWithSameFaults(model, fail) {
  try {
    const answer = await api(`${MODELS[model].list}?limit=${NEWEST}`);
    return answer.ok ? answer.body.sagas.find((s) => s.input && sameFaults(s.fail, fail))?.saga_id : null;
  } catch (_) { return null; }
}

export async function refreshCompare() {
  if (!anchor) return;
  const opened = anchor;
  const sides = {};
  for (const model of ORDER) {
    const sagaId = model === opened.model ? opened.saga.saga_id : await newestWithSameFaults(model, opened.saga.fail);
    const fetched = sagaId ? await fetchSaga(model, sagaId) : null;
    sides[model] = fetched?.saga ? fetched : null;
  }
  if (anchor !== opened) return;
  $("#compare-note").textContent = `Faults: ${faultText(opened.saga.fail)}. ` +
    `${MODELS[opened.model].label}: the saga you compared from; ` +
    `${MODELS[ORDER.find((m) => m !== opened.model)].label.toLowerCase()}: the newest of its ${NEWEST} newest ` +
    "sagas with exactly these faults.";
  const columns = $("#compare-columns");
  const signature = JSON.stringify(ORDER.map((m) => sides[m] &&
    [sides[m].saga.saga_id, sides[m].saga.status, sides[m].saga.events.length, sides[m].records.verdict]));
  if (signature === columns.dataset.signature) return;
  columns.dataset.signature = signature;
  const focused = document.activeElement?.closest?.("#compare-columns button");
  const focusKey = focused && [focused.closest(".compare-column").dataset.model, focused.dataset.action];
  columns.replaceChildren(...ORDER.map((model) => column(model, sides[model], opened)));
  if (focusKey) {
    columns.querySelector(`.compare-column[data-model="${focusKey[0]}"] button[data-action="${focusKey[1]}"]`)?.focus();
  }
}

function button(action, label, onClick) {
  const node = el("button", { type: "button", "data-action": action, text: label });
  node.addEventListener("click", onClick);
  return node;
}

function took(model, saga) {
  if (!FINISHED.has(saga.status)) return "still running";
  const start = model === "choreography" && saga.events.length ? saga.events[0].at : saga.created_at;
  const end = model === "choreography" ? saga.finished_at : saga.updated_at;
  return `took ${duration(Date.parse(end) - Date.parse(start))}`;
}

function column(model, side, opened) {
  const box = el("div", { class: "compare-column", "data-model": model }, el("h3", { text: MODELS[model].label }));
  const result = el("p", { class: "result", role: "status", "aria-live": "polite" });
  if (!side) {
    box.append(el("p", { class: "empty", text: `No ${MODELS[model].adjective} saga with these faults among the ` +
                                               `${NEWEST} newest.` }),
      el("p", { class: "actions" }, button("run", `Run it ${MODELS[model].adjective}`, () =>
        runAgain(model, opened.saga, (text) => { result.textContent = text; }, false).then(refreshCompare))), result);
    return box;
  }
  const { saga, records } = side;
  box.dataset.saga = saga.saga_id;
  const { steps, states, summary } = describe(model, saga, records);
  const lines = model === "orchestration" ? timelineLines(saga) : eventLines(saga);
  box.append(
    el("p", { class: "saga-head" }, el("code", { text: `…${saga.saga_id.slice(-8)}` }), " ", badge(saga.status),
       ` ${took(model, saga)}`),
    el("p", { class: "summary", text: summary }),
    el("ul", { class: "step-states" }, ...stepStateItems(steps, states)),
    el("p", { class: `verdict ${records.verdict}`, "data-verdict": records.verdict, text: verdictText(records) }),
    el("p", { class: "hint", text: model === "orchestration"
      ? `${lines.length} calls, each logged by the orchestrator before it acts on it:`
      : `${lines.length} events, published by the services themselves, no coordinator:` }),
    el("ol", { class: "compare-timeline" }, ...lines.map((line) => el("li", { text: line }))),
    el("p", { class: "actions" },
       button("show", "Show it", () => page.select(model, saga.saga_id)),
       button("edit", "Edit and run", () => loadIntoForm(model, saga))),
  );
  return box;
}
