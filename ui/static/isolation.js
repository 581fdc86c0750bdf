// The isolation lab's page: run the race (POST /labs/isolation) in either model, with or without
// the semantic lock, then show both sagas side by side, A's row for the username as it changed
// hands, and what happened, from the same JSON API as the dashboard.

import { $, MODELS, api, badge, clock, el, errorText, postJson } from "./core.js";

const EXPLAINED = {
  none: {
    true: "The second sign-up was refused because the first held the username at A, and then the " +
      "first failed at C and undid its account. The second read a value no completed saga ever " +
      "wrote (a dirty read): both ended COMPENSATED and nobody has the username. This is the " +
      "anomaly sagas allow: A's step was visible before its saga was over.",
    false: "This time the second sign-up did not meet the first's account at A (the race was lost " +
      "on timing); run it again.",
  },
  semantic_lock: {
    false: "The first's account was PENDING at A: a semantic lock, visible and flagged as not " +
      "final. The second was told to retry instead of being refused (409 locked, Retry-After), " +
      "waited while the first failed at C and undid itself (the lock released), then created its " +
      "account and completed. The cost: one more call (orchestration: /confirm) or reaction " +
      "(choreography: A on PaymentRegistered) per saga, and a wait for whoever meets a lock.",
    true: "The second was refused although the first held only a lock: the countermeasure did not " +
      "hold. Check the sagas' timelines below.",
  },
};

function aRow(model, saga) {
  // What A's row went through for this saga, from its timeline or its events.
  if (model === "orchestration") {
    return saga.events.filter((e) => e.step === "a" && e.outcome !== "locked").map((e) => ({
      at: e.at, text: `${e.action} → ${e.outcome}${e.outcome === "rejected" ? ` (${e.error})` : ""}`,
      state: { invoke: e.outcome === "ok" ? (saga.isolation === "semantic_lock" ? "PENDING" : "APPLIED") : "refused",
               compensate: "gone (COMPENSATED)", confirm: "APPLIED (lock released)", cancel: "cancelled" }[e.action],
    }));
  }
  const words = { AccountCreated: saga.isolation === "semantic_lock" ? "PENDING" : "APPLIED",
                  AccountRemoved: "gone (COMPENSATED)", AccountFailed: "refused",
                  PaymentRegistered: saga.isolation === "semantic_lock" ? "APPLIED (lock released)" : null };
  return saga.events.filter((e) => words[e.type]).map((e) => ({
    at: e.at, text: e.type + (e.error ? ` (${e.error})` : ""), state: words[e.type] }));
}

function sagaColumn(title, model, saga, rows) {
  const column = el("div", {}, el("h3", { text: title }),
    el("p", {}, el("code", { text: saga.saga_id }), " ", badge(saga.status)),
    el("p", { class: "hint", text: saga.error ? `error: ${saga.error}` : "no error" }));
  const a = rows?.a;
  column.append(el("p", { text: `A's row now: ${a ? a.status : "none"}` }));
  const list = el("ol", { class: "lab-timeline" });
  if (model === "orchestration") {
    for (const e of saga.events) {
      list.append(el("li", { "data-outcome": e.outcome },
        `${clock(e.at)} ${e.step} ${e.action} #${e.attempt} → ${e.outcome}`));
    }
  } else {
    for (const e of saga.events) list.append(el("li", {}, `${clock(e.at)} ${e.type} (${e.service})`));
  }
  column.append(list);
  return column;
}

async function fetchSaga(model, id) {
  const [saga, records] = await Promise.all([api(MODELS[model].saga(id)), api(MODELS[model].records(id))]);
  return { saga: saga.body, rows: records.body?.rows };
}

async function run(button) {
  const { model, countermeasure } = button.dataset;
  for (const b of document.querySelectorAll(".lab-runs button")) b.disabled = true;
  $("#lab-status").className = "result";
  $("#lab-status").textContent = `Running the race (${MODELS[model].label.toLowerCase()}, ` +
    `${countermeasure === "none" ? "no countermeasure" : "semantic lock"})… both sagas take a few seconds.`;
  try {
    const answer = await postJson("/labs/isolation", { model, countermeasure });
    if (!answer.ok) {
      $("#lab-status").className = "result error";
      $("#lab-status").textContent = errorText(answer);
      return;
    }
    const race = answer.body;
    const [first, second] = await Promise.all([fetchSaga(model, race.first.saga_id),
                                               fetchSaga(model, race.second.saga_id)]);
    show(model, countermeasure, race, first, second);
    $("#lab-status").textContent = "Done.";
  } finally {
    for (const b of document.querySelectorAll(".lab-runs button")) b.disabled = false;
  }
}

function show(model, countermeasure, race, first, second) {
  const box = $("#lab-result");
  box.hidden = false;
  box.dataset.model = model;
  box.dataset.countermeasure = countermeasure;
  box.dataset.anomaly = String(race.anomaly);
  box.dataset.second = race.second.status;
  $("#lab-username").textContent = race.username;
  $("#lab-verdict").className = `verdict ${race.anomaly ? "bad" : "ok"}`;
  $("#lab-verdict").textContent = race.anomaly
    ? "The anomaly happened: the second sign-up was refused by an account that never came to exist."
    : race.second.status === "COMPLETED" ? "No anomaly: the second sign-up waited, then got the username."
      : "No anomaly this time.";
  $("#lab-explanation").textContent = EXPLAINED[countermeasure][race.anomaly];
  const changes = [...aRow(model, first.saga).map((c) => ({ ...c, who: "first" })),
                   ...aRow(model, second.saga).map((c) => ({ ...c, who: "second" }))]
    .sort((x, y) => String(x.at).localeCompare(String(y.at)));
  $("#lab-holder").replaceChildren(...changes.map((c) =>
    el("li", { "data-who": c.who }, `${clock(c.at)} the ${c.who} saga: ${c.text} — A's row ${c.state}`)));
  $("#lab-first").replaceChildren(sagaColumn("The first sign-up (slow at C, then fails)", model, first.saga, first.rows));
  $("#lab-second").replaceChildren(sagaColumn("The second sign-up (same username)", model, second.saga, second.rows));
}

for (const button of document.querySelectorAll(".lab-runs button")) {
  button.addEventListener("click", () => run(button));
}
