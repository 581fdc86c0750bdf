// One choreographed saga: the services and the events between them, drawn from the flow table
// (GET /choreography/flow) and marked as the observer saw them; its events; the dead letters.

import { $, STATE_COLOURS, api, clock, el, errorText, esc, page, postJson, state, upper } from "./core.js";

const UNDOING = new Set(["compensate", "cancel"]);

// The service that publishes an event: whoever's reaction says it; an event no reaction says
// (the sign-up, the deadline) is raised by the entry service itself.
function sourceOf(flow, type) {
  return flow.reactions.find((r) => r.then === type || r.otherwise === type)?.service ?? flow.entry;
}

// What an event means, for its colour: a step done, a failure, an undo, the deadline, the sign-up.
export function eventKind(flow, type) {
  const { reactions } = flow;
  if (reactions.some((r) => r.on === type && r.does === "cancel")) return "timeout";
  if (reactions.some((r) => r.otherwise === type)) return "failure";
  if (reactions.some((r) => r.then === type && UNDOING.has(r.does))) return "undo";
  if (reactions.some((r) => r.then === type)) return "forward";
  return "entry";
}

const REACTION_WORDS = { apply: "applies its step", compensate: "undoes its step",
                         cancel: "cancels its step", close: "closes the saga",
                         complete: "completes the saga" };

// Every arrow (an event from its publisher to a service that reacts to it) and every event
// nobody reacts to (the ends of the saga, shown at their publisher).
export function flowShape(flow) {
  const arrows = flow.reactions.map((r) => ({ event: r.on, from: sourceOf(flow, r.on), to: r.service,
                                              does: r.does, kind: eventKind(flow, r.on) }));
  const listened = new Set(flow.reactions.map((r) => r.on));
  const ends = [];
  for (const r of flow.reactions) {
    for (const type of [r.then, r.otherwise]) {
      if (type && !listened.has(type) && !ends.some((e) => e.event === type)) {
        ends.push({ event: type, at: r.service, kind: eventKind(flow, type) });
      }
    }
  }
  return { arrows, ends };
}

// Each service's state, as the events say, in the order they happened.
export function serviceStates(flow, saga) {
  const states = Object.fromEntries(flow.steps.map((s) => [s, "pending"]));
  if (saga.status === "COMPLETED") return Object.fromEntries(flow.steps.map((s) => [s, "applied"]));
  const applied = new Set();
  const seenAt = new Map();
  saga.events.forEach((event, index) => {
    // The reaction this event answers: of its publisher's, the one whose trigger came last.
    const answers = flow.reactions.filter((r) => r.service === event.service &&
                                                 (r.then === event.type || r.otherwise === event.type));
    const triggered = answers.filter((r) => seenAt.has(r.on));
    const reaction = triggered.sort((p, q) => seenAt.get(p.on) - seenAt.get(q.on)).pop() || answers[0];
    if (!seenAt.has(event.type)) seenAt.set(event.type, index);
    const service = reaction?.service;
    if (service in states) {
      const done = event.type === reaction.then;
      if (reaction.does === "apply") {
        states[service] = done ? "applied" : "failed";
        if (done) applied.add(service);
      } else if (reaction.does === "compensate") {
        // A service that never applied leaves a tombstone: cancelled, not compensated.
        states[service] = !done ? "failed" : applied.has(service) ? "compensated" : "cancelled";
      } else if (reaction.does === "cancel") {
        states[service] = done ? "cancelled" : "failed";
      }
    }
    for (const next of flow.reactions.filter((r) => r.on === event.type && r.service in states)) {
      const now = states[next.service];
      if (next.does === "apply" && now === "pending") states[next.service] = "running";
      if (UNDOING.has(next.does) && ["pending", "running", "applied"].includes(now)) {
        states[next.service] = "compensating";
      }
    }
  });
  return states;
}

// Where each event type first appears in the saga (1-based), as the order number on its arrow.
function orderOf(saga) {
  const order = new Map();
  saga.events.forEach((e, i) => { if (!order.has(e.type)) order.set(e.type, i + 1); });
  return order;
}

const INK = { forward: "#0b5cad", entry: "#1d2330", failure: "#b42318", undo: "#8250df", timeout: "#9a6700" };
const UNSEEN = "#c4c9d0";

export function flowDiagram(flow, saga, states) {
  const { arrows, ends } = flowShape(flow);
  const index = Object.fromEntries(flow.steps.map((s, i) => [s, i]));
  const order = orderOf(saga);
  const w = 160;
  const gap = 140;
  const x = (i) => 20 + i * (w + gap);
  const width = x(flow.steps.length - 1) + w + 20;

  // Arrows between neighbours run in lanes across the gap; longer ones go over the top
  // (forwards) or under the bottom (backwards); an event a service raises for itself enters.
  const lanes = {};
  const over = [];
  const under = [];
  const entering = [];
  for (const arrow of arrows) {
    const [a, b] = [index[arrow.from], index[arrow.to]];
    if (a === undefined || b === undefined) continue;
    if (a === b) entering.push(arrow);
    else if (Math.abs(a - b) === 1) (lanes[Math.min(a, b)] ||= []).push(arrow);
    else (b > a ? over : under).push(arrow);
  }
  for (const gapArrows of Object.values(lanes)) {
    gapArrows.sort((p, q) => (index[q.to] > index[q.from]) - (index[p.to] > index[p.from]));
  }
  const laneCount = Math.max(1, ...Object.values(lanes).map((l) => l.length));
  const endsAt = (s) => ends.filter((e) => e.at === s);
  const endCount = Math.max(0, ...flow.steps.map((s) => endsAt(s).length));
  const top = 44 + 20 * Math.max(0, over.length - 1);
  const height = Math.max(30 + 24 * laneCount, 62 + 15 * endCount);
  const bottom = top + height;
  const total = bottom + 20 + 22 * under.length;

  const markers = Object.entries({ ...INK, unseen: UNSEEN }).map(([kind, ink]) =>
    `<marker id="m-${kind}" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="${ink}"/></marker>`).join("");
  let svg = `<svg viewBox="0 0 ${width} ${total}" xmlns="http://www.w3.org/2000/svg"><defs>${markers}</defs>`;

  const arrowGroup = (arrow, path, lx, ly, anchor = "middle") => {
    const seen = order.get(arrow.event);
    const look = seen ? arrow.kind : "unseen";
    const ink = seen ? INK[arrow.kind] : UNSEEN;
    const label = `${seen ? `${seen}. ` : ""}${arrow.event}`;
    const title = `${arrow.event}: from ${upper(arrow.from)} to ${upper(arrow.to)}, which ${REACTION_WORDS[arrow.does] || arrow.does}` +
      (seen ? ` (event ${seen})` : " (not seen)");
    return `<g class="arrow k-${look}" data-event="${esc(arrow.event)}" data-from="${esc(arrow.from)}" data-to="${esc(arrow.to)}" data-seen="${Boolean(seen)}" data-order="${seen || ""}">
      <title>${esc(title)}</title>
      <path d="${path}" fill="none" stroke="${ink}" stroke-width="${seen ? 2.5 : 1.5}" marker-end="url(#m-${look})"/>
      <text class="event-label${seen ? " seen" : ""}" x="${lx}" y="${ly}" text-anchor="${anchor}" fill="${ink}">${esc(label)}</text></g>`;
  };

  // A service whose undo failed is "failed" like one whose step failed; its node says which.
  const undoFailed = (step) => flow.reactions.some((r) => r.service === step && UNDOING.has(r.does) &&
                                                        r.otherwise && order.has(r.otherwise));
  flow.steps.forEach((step, i) => {
    const [fill, ink] = STATE_COLOURS[states[step]];
    const said = states[step] === "failed" && undoFailed(step) ? "failed to undo" : states[step];
    svg += `<g class="node" data-node="${esc(step)}" data-state="${states[step]}">
      <rect x="${x(i)}" y="${top}" width="${w}" height="${height}" rx="10" fill="${fill}" stroke="${ink}"/>
      <text x="${x(i) + w / 2}" y="${top + 22}" text-anchor="middle" fill="${ink}">Service ${esc(upper(step))}</text>
      <text class="label" x="${x(i) + w / 2}" y="${top + 40}" text-anchor="middle">${said}</text>`;
    endsAt(step).forEach((end, k) => {
      const seen = order.get(end.event);
      svg += `<text class="end${seen ? " seen" : ""}" data-event="${esc(end.event)}" data-seen="${Boolean(seen)}" data-order="${seen || ""}"
        x="${x(i) + w / 2}" y="${top + 62 + 15 * k}" text-anchor="middle" fill="${seen ? INK[end.kind] : "#8c959f"}">${
        seen ? `${seen}. ` : ""}${esc(end.event)}</text>`;
    });
    svg += "</g>";
  });
  for (const [gapIndex, gapArrows] of Object.entries(lanes)) {
    const left = x(Number(gapIndex)) + w;
    const right = left + gap;
    gapArrows.forEach((arrow, j) => {
      const y = top + 30 + 24 * j;
      const forwards = index[arrow.to] > index[arrow.from];
      const path = forwards ? `M${left + 2},${y} L${right - 3},${y}` : `M${right - 2},${y} L${left + 3},${y}`;
      svg += arrowGroup(arrow, path, (left + right) / 2, y - 5);
    });
  }
  over.forEach((arrow, k) => {
    const y = top - 20 - 20 * k;
    const [from, to] = [x(index[arrow.from]) + w - 20 - 10 * k, x(index[arrow.to]) + 20 + 10 * k];
    svg += arrowGroup(arrow, `M${from},${top - 1} L${from},${y} L${to},${y} L${to},${top - 3}`, (from + to) / 2, y - 5);
  });
  under.forEach((arrow, k) => {
    const y = bottom + 16 + 22 * k;
    const [from, to] = [x(index[arrow.from]) + 20 + 10 * k, x(index[arrow.to]) + w - 20 - 10 * k];
    svg += arrowGroup(arrow, `M${from},${bottom + 1} L${from},${y} L${to},${y} L${to},${bottom + 3}`, (from + to) / 2, y + 14);
  });
  entering.forEach((arrow, k) => {
    const ax = x(index[arrow.to]) + 24 + 14 * k;
    svg += arrowGroup(arrow, `M${ax},${top - 26} L${ax},${top - 3}`, ax - 8, top - 30, "start");
  });
  return `${svg}</svg>`;
}

export function summary(saga, flow) {
  const failed = upper(saga.failed_step || "");
  const removalFailed = saga.events.find((e) => flow.reactions.some((r) => UNDOING.has(r.does) && r.otherwise === e.type));
  switch (saga.status) {
    case "COMPLETED":
      return "Every service applied its step, each reacting to the previous one's event; nobody directed it.";
    case "COMPENSATED":
      return `Step ${failed} failed (${saga.reason}); the failure travelled back as events and each service undid itself. ${saga.error || ""}`;
    case "COMPENSATION_FAILED":
      return `Step ${failed} failed, and an undo could not be completed${removalFailed ? ` (${removalFailed.type})` : ""}: the saga needs attention. ${removalFailed?.error || saga.error || ""}`;
    case "COMPENSATING":
      return `Step ${failed} failed (${saga.reason}); the failure is travelling back…`;
    default:
      return saga.input ? "Running: each service reacts to the previous one's event…"
        : "The sign-up was taken in; waiting for the observer to see it…";
  }
}

export function renderEvents(events) {
  const first = events.length ? Date.parse(events[0].at) : 0;
  $("#events").replaceChildren(...events.map((e, i) => el("tr", { "data-type": e.type, class: `k-${eventKind(state.flow, e.type)}` },
    el("td", { text: String(i + 1) }), el("td", { class: "type", text: e.type }),
    el("td", { text: upper(e.service) }),
    el("td", { text: `${clock(e.at)} (+${Math.max(0, Date.parse(e.at) - first)} ms)` }),
    el("td", { class: "err", text: [e.reason, e.error].filter(Boolean).join(": ") }))));
}

// One line per event, for the comparison.
export const eventLines = (saga) => saga.events.map((e) =>
  `${e.type} (${upper(e.service)})${e.error ? `: ${e.error}` : ""}`);

// The dead letters of every service and of the broker: shown only when there are any.
export async function refreshDeadLetters() {
  let body;
  try {
    const answer = await api("/choreography/dead-letters");
    if (!answer.ok) return;
    body = answer.body;
  } catch (_) { return; }
  const box = $("#dead-letters-box");
  const letters = body.dead_letters || [];
  box.hidden = !letters.length || state.model !== "choreography";
  $("#dead-letters-note").textContent = `${letters.length} event(s) could not be delivered or handled` +
    (body.unreachable?.length ? `; services not asked: ${body.unreachable.map(upper).join(", ")}.` : ".");
  const signature = JSON.stringify(letters.map((l) => [l.event_id, l.at, l.where]));
  if (signature === box.dataset.signature) return;
  box.dataset.signature = signature;
  $("#dead-letters").replaceChildren(...letters.slice(0, 20).map((letter) => {
    const where = [letter.service ? `Service ${upper(letter.service)}` : "", letter.where].filter(Boolean).join(" ");
    const item = el("li", {}, el("strong", { text: `${where}: ` }),
      `${letter.type || letter.queue || "event"}${letter.destination ? ` → ${upper(letter.destination)}` : ""}` +
      `${letter.attempts ? `, ${letter.attempts} attempt${letter.attempts === 1 ? "" : "s"}` : ""}` +
      ` — ${letter.error || letter.reason || ""} `);
    if (letter.saga_id) {
      const show = el("button", { type: "button", class: "link", text: `saga …${letter.saga_id.slice(-8)}` });
      show.addEventListener("click", () => page.select("choreography", letter.saga_id));
      item.append(show);
    }
    const redrivable = letter.where === "broker" ? letter.event_id && !letter.redriven_at : letter.event_id;
    if (redrivable) {
      const again = el("button", { type: "button", class: "redrive", text: "Redrive",
                                   title: "Send or handle this event again (idempotent)" });
      again.addEventListener("click", () => redrive(letter, again));
      item.append(" ", again);
    } else if (letter.redriven_at) {
      item.append(el("span", { class: "hint", text: " redriven" }));
    }
    return item;
  }));
}

async function redrive(letter, button) {
  button.disabled = true;
  const request = letter.where === "broker" ? { where: "broker", id: letter.id }
    : { where: letter.where, service: letter.service, event_id: letter.event_id };
  try {
    const answer = await postJson("/choreography/dead-letters/redrive", request);
    button.textContent = answer.ok ? `Redriven (${answer.body.redriven})` : `Refused: ${errorText(answer)}`;
  } catch (_) {
    button.textContent = "The orchestrator is not answering";
  }
  $("#dead-letters-box").dataset.signature = "";  // redraw at the next refresh
}
