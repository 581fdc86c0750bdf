// The start form, drawn from GET /definition: an input per field, a fault row per step, the
// scenario buttons named after the steps; and starting a saga in either model.

import { $, MODELS, capitalised, el, errorText, page, postJson, state, stepsOf, upper } from "./core.js";

// Example values for the fields the sign-up is known to take; any other field gets one too.
// A username held by a live account cannot be taken again (service A's rule): every saga started
// here gets a fresh one, the sample's name with a new random suffix.
const UNIQUE = ["username"];
export const fresh = (value) => `${String(value ?? "user").replace(/-[0-9a-f]{4}$/, "")}-` +
  Math.floor(Math.random() * 0x10000).toString(16).padStart(4, "0");
const SAMPLES = { username: fresh("ada"), address: "1 Main Street", payment: "visa-4242" };

// The input with a fresh value in each field that must be unique.
export const freshInput = (input) => Object.fromEntries(Object.entries(input).map(
  ([field, value]) => [field, UNIQUE.includes(field) ? fresh(value) : value]));

// The model's steps: the orchestrator's definition, or the choreography's flow table.
const stepsFor = (model) => stepsOf(model, null);

function slowDelay() {
  const timeoutMs = (state.definition?.call_timeout || 5) * 1000;
  return Math.round(Math.min(1500, timeoutMs * 0.6));
}

// Every scenario as [id, label, faults]; the middle step shows what happens mid-saga.
export function scenarios(steps) {
  const names = steps.map((s) => s.name);
  const middle = names[Math.floor((names.length - 1) / 2)];
  const last = names[names.length - 1];
  const M = upper(middle);
  return [
    ["success", "Success", {}],
    ...names.map((name) => [`fail-${name}`, `Failure at ${upper(name)}`, { [name]: "before_commit" }]),
    ["after-commit", `${M} fails after commit`, { [middle]: "after_commit" }],
    ["timeout", `Timeout at ${M}`, { [middle]: "timeout" }],
    ["transient", `Transient failures at ${M} (retried)`, { [middle]: "transient:2" }],
    ["compensation-failed", "Failed compensation", { [middle]: "compensate_fail", [last]: "before_commit" }],
    ["slow", "Slow run (watch it)", Object.fromEntries(names.map((n) => [n, `delay:${slowDelay()}`]))],
  ];
}

export function buildInputs() {
  $("#input-fields").replaceChildren(...state.definition.input_fields.map((field) =>
    el("label", {}, capitalised(field), " ",
       el("input", { name: field, required: true, maxlength: "255", value: SAMPLES[field] ?? `${field} 1`,
                     autocomplete: "off", spellcheck: "false" }))));
}

// The model's fault rows and scenarios (kept values survive a switch of model).
export function buildForModel(model) {
  const steps = stepsFor(model);
  const faultsOn = state.definition.faults_enabled;
  const kept = faultsOn ? faultsFromForm() : {};
  $("#fault-rows").replaceChildren(...steps.map((step) => {
    const select = el("select", { name: `fail_${step.name}` },
      el("option", { value: "", text: "no fault" }),
      ...state.definition.fault_modes.map((mode) => el("option", { value: mode, text: mode })));
    select.addEventListener("change", () => showAmount(step.name));
    const kind = step.kind ? `, ${step.kind}` : "";
    return el("div", { class: "fault-row", "data-step": step.name },
      el("label", {}, `Fault at ${upper(step.name)} `,
         el("span", { class: "hint", text: `(${step.action || `step ${step.name}`}${kind})` }), select),
      el("label", { class: "amount" }, "N ", el("input", { name: `n_${step.name}`, type: "number",
                                                          min: "1", value: "2" })));
  }));
  showFaultsInForm(kept);
  $("#faults").hidden = !faultsOn;
  $("#faults-off").hidden = faultsOn;
  $("#scenarios").replaceChildren(...scenarios(steps)
    .filter(([id]) => faultsOn || id === "success")
    .map(([id, label, fail]) => {
      const button = el("button", { type: "button", "data-scenario": id, text: label });
      button.addEventListener("click", () => {
        showFaultsInForm(fail);
        startFromForm(fail);
      });
      return button;
    }));
  $("#start-target").textContent = model === "orchestration"
    ? "Starts an orchestrated saga: POST /start, driven step by step by the orchestrator."
    : "Starts a choreographed sign-up: POST /choreography/signups; the services react to each other's events.";
  renderSteps(model, steps);
}

function renderSteps(model, steps) {
  $("#steps").replaceChildren(...steps.map((step) => {
    const item = el("li", { "data-step": step.name, "data-kind": step.kind || "" },
      el("strong", { text: `${upper(step.name)}` }), ` ${step.action || ""} `);
    if (step.kind) item.append(el("span", { class: `kind k-${step.kind}`, text: step.kind }));
    const undo = model === "choreography" ? "undoes itself when the failure reaches it"
      : step.kind === "pivot" ? "cancelled, never compensated (the point of no return)"
      : step.kind === "retriable" ? "retried until it succeeds, never undone"
      : step.compensation ? `undo: ${step.compensation}` : "";
    if (undo) item.append(el("span", { class: "hint", text: ` — ${undo}` }));
    return item;
  }));
}

function showAmount(step) {
  const select = document.querySelector(`select[name="fail_${step}"]`);
  const amount = document.querySelector(`.fault-row[data-step="${step}"] .amount`);
  if (select && amount) amount.hidden = !select.value.endsWith(":N");
}

export function faultsFromForm() {
  const fail = {};
  for (const select of document.querySelectorAll("#fault-rows select")) {
    const step = select.name.slice("fail_".length);
    const amount = document.querySelector(`input[name="n_${step}"]`)?.value || "1";
    if (select.value) fail[step] = select.value.replace(":N", `:${amount}`);
  }
  return fail;
}

export function showFaultsInForm(fail) {
  for (const select of document.querySelectorAll("#fault-rows select")) {
    const step = select.name.slice("fail_".length);
    const [kind, amount] = (fail[step] || "").split(":");
    select.value = amount ? `${kind}:N` : kind;
    if (amount) document.querySelector(`input[name="n_${step}"]`).value = amount;
    showAmount(step);
  }
}

function inputFromForm() {
  const form = $("#start-form");
  return Object.fromEntries(state.definition.input_fields.map((field) => [field, form.elements[field].value]));
}

// Start a saga in `model`; resolves to { sagaId } or { error }.
export async function startSaga(model, input, fail) {
  const body = Object.keys(fail || {}).length ? { ...input, fail } : { ...input };
  try {
    const answer = await postJson(MODELS[model].start, body, MODELS[model].startHeaders);
    if (!answer.ok) return { error: errorText(answer) };
    if (model === "choreography") state.fresh.set(answer.body.saga_id, 0);
    return { sagaId: answer.body.saga_id };
  } catch (_) {
    return { error: "the orchestrator is not answering" };
  }
}

async function startFromForm(fail) {
  const model = state.model;
  const result = $("#start-result");
  result.className = "result";
  result.textContent = "Starting…";
  const started = await startSaga(model, inputFromForm(), state.definition.faults_enabled ? fail : {});
  if (started.error) {
    result.className = "result error";
    result.textContent = `Not started: ${started.error}`;
    return;
  }
  result.textContent = `Started saga ${started.sagaId} (${MODELS[model].adjective}).`;
  const form = $("#start-form");
  for (const field of UNIQUE) {  // the next one gets a username of its own
    if (form.elements[field]) form.elements[field].value = fresh(form.elements[field].value);
  }
  await page.select(model, started.sagaId);
}

// "Edit and run": the saga's input and faults into the form, under the saga's model.
export async function loadIntoForm(model, saga) {
  await page.setModel(model);
  const form = $("#start-form");
  const input = freshInput(saga.input || {});
  for (const field of state.definition.input_fields) {
    if (field in input) form.elements[field].value = input[field];
  }
  showFaultsInForm(state.definition.faults_enabled ? saga.fail || {} : {});
  const result = $("#start-result");
  result.className = "result";
  result.textContent = `Loaded the input and faults of saga ${saga.saga_id.slice(-8)} ` +
    `(${MODELS[model].adjective}): change what you like, then Start saga.`;
  form.elements[state.definition.input_fields[0]].focus();
}

export function wireForm() {
  $("#start-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startFromForm(faultsFromForm());
  });
}
