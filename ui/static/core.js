// What every part of the dashboard shares: the page's state, the two models' endpoints,
// DOM and SVG helpers, and the JSON API (which also keeps the "orchestrator down" banner).

export const FINISHED = new Set(["COMPLETED", "COMPENSATED", "COMPENSATION_FAILED"]);

// Everything that differs between the two models, as far as the page is concerned.
export const MODELS = {
  orchestration: {
    label: "Orchestration",
    adjective: "orchestrated",
    start: "/start",
    startHeaders: { Prefer: "respond-async" },
    list: "/sagas",
    saga: (id) => `/sagas/${id}`,
    records: (id) => `/sagas/${id}/records`,
  },
  choreography: {
    label: "Choreography",
    adjective: "choreographed",
    start: "/choreography/signups",
    startHeaders: {},
    list: "/choreography/sagas",
    saga: (id) => `/choreography/sagas/${id}`,
    records: (id) => `/choreography/sagas/${id}/records`,
  },
};

export const state = {
  model: "orchestration",
  selected: { orchestration: null, choreography: null }, // kept per model across tab switches
  lists: { orchestration: [], choreography: [] }, // the newest sagas of each, as last fetched
  fresh: new Map(), // choreographed sagas started here, not yet listed by the observer: times asked
  definition: null, // GET /definition
  flow: null, // GET /choreography/flow
  orchestratorDown: false,
  servicesDown: [],
};

// Set by app.js: what other parts may ask the page to do.
export const page = { select: async () => {}, setModel: async () => {} };

export const $ = (selector) => document.querySelector(selector);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

// For text put into SVG markup: everything from the server is escaped.
export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

export async function api(path, options = {}) {
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

export const postJson = (path, body, headers = {}) => api(path, {
  method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json", ...headers },
});

export const errorText = (answer) => answer.body?.error?.message || `HTTP ${answer.status}`;

// ---- the health banner ---------------------------------------------------------------

export function setOrchestratorDown(down) {
  state.orchestratorDown = down;
  renderBanner();
}

export function renderBanner() {
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

// ---- words and numbers ---------------------------------------------------------------

export const upper = (name) => String(name ?? "").toUpperCase();
export const words = (status) => status.replaceAll("_", " ");

// Fill and ink of a step's node, by its state, in both models' diagrams.
export const STATE_COLOURS = {
  pending: ["#eef0f3", "#6e7781"], running: ["#ddeeff", "#0b5cad"], applied: ["#dafbe1", "#1a7f37"],
  failed: ["#fee4e2", "#b42318"], compensating: ["#fff4ce", "#9a6700"], compensated: ["#f1e8ff", "#8250df"],
  cancelled: ["#f1e8ff", "#8250df"],
};

export function badge(status) {
  return el("span", { class: `badge s-${status}`, text: words(status) });
}

export function capitalised(name) {
  const text = name.replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) +
    `.${String(new Date(iso).getMilliseconds()).padStart(3, "0")}` : "";
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

export function faultText(fail) {
  return Object.entries(fail || {}).map(([step, mode]) => `${step}=${mode}`).join(" ") || "no faults";
}

export function sameFaults(a, b) {
  const canonical = (fail) => JSON.stringify(Object.entries(fail || {}).sort());
  return canonical(a) === canonical(b);
}

// The saga's step objects, as the orchestrator's definition describes them (kind, action,
// what each stores). An orchestrated saga of another version than the one /definition
// describes: its step names from its rows or its log, without kinds.
export function stepsOf(model, saga, rows = null) {
  const definition = state.definition;
  let names;
  if (model === "choreography") names = state.flow?.steps || definition.steps.map((s) => s.name);
  else if (sameVersion(saga, definition)) names = definition.steps.map((s) => s.name);
  else names = rows && Object.keys(rows).length ? Object.keys(rows)
    : [...new Set((saga.events || []).map((e) => e.step))];
  return names.map((name) => {
    const described = definition.steps.find((s) => s.name === name);
    if (described && model === "orchestration" && sameVersion(saga, definition)) return described;
    // The choreography shares the steps' names, inputs and actions, not their kinds: there,
    // every step undoes itself when the failure travels back to it.
    return { name, participant: described?.participant || name, kind: null,
             receives: described?.receives || [], action: described?.action || "", compensation: null };
  });
}

function sameVersion(saga, definition) {
  return !saga?.definition || (saga.definition.name === definition.name &&
                               saga.definition.version === definition.version);
}

// What the service's row holds: the input field the step stores (its `receives[0]`).
export function rowValue(step, row) {
  const field = step?.receives?.[0] ?? (state.definition?.input_fields || []).find((f) => f in row);
  return field ? row[field] ?? "" : "";
}
