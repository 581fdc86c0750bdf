// One orchestrated saga: what each step went through (from the saga log), the flow
// Orchestrator → steps with the compensations drawn back, a summary and the timeline.

import { $, STATE_COLOURS, el, esc, upper, words } from "./core.js";

const UNDO_ACTIONS = new Set(["compensate", "cancel"]); // a pivot is cancelled, never compensated

// What each step went through, from the log (and, for an undone step, from its row).
export function stepStates(saga, steps, rows) {
  return steps.map((step, index) => {
    const events = saga.events.filter((e) => e.step === step.name);
    const invoked = events.some((e) => e.action === "invoke" && e.outcome === "ok");
    const undone = events.some((e) => UNDO_ACTIONS.has(e.action) && e.outcome === "ok");
    const here = saga.current_step === index;
    if (saga.status === "COMPLETED") return "applied"; // a pivot that had committed after all, too
    if (undone) return rows?.[step.name]?.status === "CANCELLED" ? "cancelled" : "compensated";
    if (saga.status === "COMPENSATING" && here) return "compensating";
    if (saga.status === "COMPENSATION_FAILED" && here) return "failed";
    if (saga.failed_step === step.name) return "failed";
    if (invoked) return "applied";
    if (saga.status === "RUNNING" && here) return "running";
    return "pending";
  });
}

export const undoVerb = (step) => (step.kind === "pivot" ? "cancel" : "undo");

export function diagram(saga, steps, states) {
  const x = (i) => 10 + i * 205;
  const w = 120;
  const width = x(steps.length) + w + 15;
  const order = saga.events.filter((e) => UNDO_ACTIONS.has(e.action) && e.outcome === "ok").map((e) => e.step);
  let svg = `<svg viewBox="0 0 ${width} 160" xmlns="http://www.w3.org/2000/svg">
    <defs><marker id="fwd" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
      <path d="M0,0 L10,5 L0,10 z" fill="#0b5cad"/></marker>
      <marker id="back" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
      <path d="M0,0 L10,5 L0,10 z" fill="#8250df"/></marker></defs>`;
  const node = (i, key, name, label, sub, [fill, ink]) => `<g class="node" data-node="${esc(key)}">
      <rect x="${x(i)}" y="20" width="${w}" height="84" rx="10" fill="${fill}" stroke="${ink}"/>
      <text x="${x(i) + w / 2}" y="46" text-anchor="middle" fill="${ink}">${esc(name)}</text>
      <text class="label" x="${x(i) + w / 2}" y="66" text-anchor="middle">${esc(label)}</text>
      <text class="label kind" x="${x(i) + w / 2}" y="86" text-anchor="middle">${esc(sub)}</text></g>`;
  svg += node(0, "orchestrator", "Orchestrator", words(saga.status).toLowerCase(), "", ["#fff", "#1d2330"]);
  steps.forEach((step, i) => {
    svg += node(i + 1, step.name, `Service ${upper(step.participant)}`, states[i], step.kind || "",
                STATE_COLOURS[states[i]]);
  });
  steps.forEach((step, i) => {
    const from = x(i) + w;
    const to = x(i + 1);
    const reached = states[i] !== "pending";
    svg += `<line x1="${from}" y1="42" x2="${to - 2}" y2="42" stroke="${reached ? "#0b5cad" : "#c4c9d0"}"
      stroke-width="2" marker-end="url(#fwd)"/>
      <text class="label" x="${(from + to) / 2}" y="34" text-anchor="middle">${i + 1}. invoke ${esc(upper(step.name))}</text>`;
    const position = order.indexOf(step.name);
    const active = states[i] === "compensating";
    if (position >= 0 || active) {
      const verb = undoVerb(step);
      svg += `<line class="compensation" data-step="${esc(step.name)}" x1="${to}" y1="86" x2="${from + 2}" y2="86"
        stroke="#8250df" stroke-width="2" ${active ? 'stroke-dasharray="5 4"' : ""} marker-end="url(#back)"/>
        <text class="label" x="${(from + to) / 2}" y="100" text-anchor="middle">${
          position >= 0 ? `${position + 1}. ${verb} ${esc(upper(step.name))}` : `${verb === "cancel" ? "cancelling" : "undoing"} ${esc(upper(step.name))}`}</text>`;
    }
  });
  svg += `<text class="label" x="${width / 2}" y="140" text-anchor="middle">Steps run left to right; compensations (purple) run right to left, starting with the failed step.</text></svg>`;
  return svg;
}

export function summary(saga, steps) {
  const failed = upper(saga.failed_step || "");
  switch (saga.status) {
    case "COMPLETED":
      return `Every step applied: ${steps.map((s) => s.action || s.name).join(", ")}.`;
    case "COMPENSATED":
      return `Step ${failed} failed (${saga.reason}); every step was undone in reverse. ${saga.error || ""}`;
    case "COMPENSATION_FAILED":
      return `Step ${failed} failed, and a compensation could not be completed: the saga needs attention. ${saga.compensation_error || ""}`;
    case "COMPENSATING":
      return `Step ${failed} failed; undoing steps in reverse…`;
    default:
      return `Running step ${upper(steps[saga.current_step]?.name)}…`;
  }
}

export function renderTimeline(events) {
  $("#timeline").replaceChildren(...events.map((e, i) => el("tr", { class: `o-${e.outcome}`, "data-action": e.action },
    ...[i + 1, upper(e.step), e.action, e.attempt, e.http_status ?? "—", e.outcome, `${e.latency_ms} ms`]
      .map((c) => el("td", { text: String(c) })),
    el("td", { class: "err", text: e.error || "" }))));
}

// One line per logged attempt, for the comparison.
export const timelineLines = (saga) => saga.events.map((e) =>
  `${upper(e.step)} ${e.action} #${e.attempt}: ${e.outcome}${e.http_status ? ` (${e.http_status})` : ""}`);
