"""The dashboard in real headless Chromium: start scenarios in both models, watch them, check
what the page shows against what the system says."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from playwright.sync_api import Locator, Page, expect
from sqlalchemy import text

from common.db import utcnow
from messaging.events import Envelope
from scripts.stack import Stack
from tests.browser.conftest import Console
from tests.support.checks import consistency
from tests.support.people import fresh_user

pytestmark = pytest.mark.browser

FINAL = 30_000  # ms a saga may take to finish on a loaded machine
SAGA_ID = re.compile(r"[0-9a-f]{32}")
TRUTH = {"orchestration": "/sagas/{}", "choreography": "/choreography/sagas/{}"}


def get(stack: Stack, path: str) -> Any:
    answer = requests.get(stack.urls["orchestrator"] + path, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def open_dashboard(page: Page, stack: Stack, model: str = "orchestration") -> None:
    page.goto(stack.urls["orchestrator"] + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    if model != "orchestration":
        switch(page, model)


def switch(page: Page, model: str) -> None:
    page.get_by_role("tab", name=model.capitalize()).click()
    expect(page.locator("#model-panel")).to_have_attribute("data-model", model)


def id_in(locator: Locator) -> str:
    found = SAGA_ID.search(locator.inner_text())
    assert found, f"no saga id in {locator.inner_text()!r}"
    return found.group(0)


def wait_shown(page: Page, saga_id: str, final: str) -> None:
    expect(page.locator(f"#detail[data-saga='{saga_id}']")).to_have_attribute("data-status", final,
                                                                               timeout=FINAL)


def run_scenario(page: Page, stack: Stack, label: str, final: str, model: str = "orchestration") -> dict:
    """Click a scenario button; wait until the page shows it finished; return the saga's truth."""
    page.get_by_role("button", name=label, exact=True).click()
    expect(page.locator("#start-result")).to_contain_text("Started saga")  # "Starting…" until answered
    saga_id = id_in(page.locator("#start-result"))
    wait_shown(page, saga_id, final)
    truth = get(stack, TRUTH[model].format(saga_id))
    assert truth["status"] == final, "the page shows what the system says"
    return truth


def step_states(page: Page) -> dict[str, str]:
    return {item.get_attribute("data-step"): item.get_attribute("data-state")
            for item in page.locator("#step-states li").all()}


def unique(prefix: str) -> str:
    """A username to type: no other saga's."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def renamed(name: str) -> re.Pattern[str]:
    """`name` as the page starts it again: the same name with a fresh suffix (a username held by
    a live account cannot be taken again, so every run gets one of its own)."""
    return re.compile(re.escape(re.sub(r"-[0-9a-f]{4}$", "", name)) + r"-[0-9a-f]{4}")


def same_but_renamed(again: dict[str, str], first: dict[str, str]) -> bool:
    """The same input but for a fresh username."""
    return (renamed(first["username"]).fullmatch(again["username"]) is not None
            and {**again, "username": ""} == {**first, "username": ""})


# Orchestration ---------------------------------------------------------------------------------

# Notes what the page looks like the moment it says it is ready.
NOTE_AT_READY = """new MutationObserver(() => {
  if (document.body?.dataset.ready === "true" && window.atReady === undefined) {
    window.atReady = {services: document.querySelectorAll("#services li").length,
                      top: document.querySelector("#scenarios").getBoundingClientRect().top};
  }
}).observe(document, {attributes: true, subtree: true, attributeFilter: ["data-ready"]});"""


def test_nothing_moves_the_buttons_once_the_page_says_it_is_ready(page: Page, stack: Stack) -> None:
    """The page is ready (data-ready) only once what sits above the scenario buttons has loaded:
    a service list filling in a moment later pushed them down, under a test's click."""
    page.add_init_script(NOTE_AT_READY)
    open_dashboard(page, stack)
    expect(page.locator("#services li")).to_have_count(len(stack.declaration.services))
    at_ready = page.evaluate("window.atReady")
    assert at_ready["services"] == len(stack.declaration.services), "the services were listed by then"
    box = page.locator("#scenarios").bounding_box()
    assert box is not None and abs(box["y"] - at_ready["top"]) < 0.5, "the buttons are where they were"


def test_success_scenario(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    truth = run_scenario(page, stack, "Success", "COMPLETED")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "consistent")
    assert step_states(page) == {"a": "applied", "b": "applied", "c": "applied"}
    assert [stack.row_status(s, truth["saga_id"]) for s in "abc"] == ["APPLIED"] * 3
    expect(page.locator("#rows tr[data-step=b] td").nth(1)).to_have_text("APPLIED")
    expect(page.locator("#timeline tr")).to_have_count(3)
    expect(page.locator("#diagram line.compensation")).to_have_count(0)
    row = page.locator(f"#saga-list button[data-saga='{truth['saga_id']}']")
    expect(row).to_contain_text("COMPLETED")
    expect(row).to_contain_text(truth["saga_id"][-8:])  # ids are UUIDv7: the tail tells them apart


def test_failure_at_c_shows_reverse_compensation(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    truth = run_scenario(page, stack, "Failure at C", "COMPENSATED")
    saga_id = truth["saga_id"]
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "consistent")
    assert step_states(page) == {"a": "compensated", "b": "compensated", "c": "cancelled"}
    assert [stack.row_status(s, saga_id) for s in "abc"] == ["COMPENSATED", "COMPENSATED", "CANCELLED"]
    arrows = page.locator("#diagram line.compensation")
    expect(arrows).to_have_count(3)
    expect(page.locator("#diagram")).to_contain_text("1. undo C")
    expect(page.locator("#diagram")).to_contain_text("3. undo A")
    expect(page.locator("#timeline tr")).to_have_count(len(truth["events"]))
    expect(page.locator("#timeline")).to_contain_text("compensate")
    expect(page.locator("#detail-summary")).to_contain_text("Step C failed")


def test_after_commit_compensates_b_itself(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    truth = run_scenario(page, stack, "B fails after commit", "COMPENSATED")
    assert step_states(page) == {"a": "compensated", "b": "compensated", "c": "pending"}
    assert stack.row_status("b", truth["saga_id"]) == "COMPENSATED"
    expect(page.locator("#rows tr[data-step=c] td").nth(1)).to_have_text("no row")


def test_failed_compensation_is_shown_as_needing_attention(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    truth = run_scenario(page, stack, "Failed compensation", "COMPENSATION_FAILED")
    assert step_states(page) == {"a": "applied", "b": "failed", "c": "cancelled"}
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "inconsistent")
    assert stack.row_status("b", truth["saga_id"]) == "APPLIED"
    page.get_by_role("button", name="Retry the compensation").click()
    expect(page.locator(f"#detail[data-saga='{truth['saga_id']}']")).to_have_attribute(
        "data-status", "COMPENSATED")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "consistent")
    assert step_states(page) == {"a": "compensated", "b": "compensated", "c": "cancelled"}
    assert [stack.row_status(s, truth["saga_id"]) for s in "abc"] == ["COMPENSATED", "COMPENSATED",
                                                                      "CANCELLED"]
    expect(page.get_by_role("button", name="Retry the compensation")).to_be_hidden()


def test_consistency_check_from_the_page(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    run_scenario(page, stack, "Failure at B", "COMPENSATED")
    page.get_by_role("button", name="Check consistency of all sagas").click()
    expect(page.locator("#check-result")).to_contain_text("sagas checked")
    # The shared system also holds rows that contract tests wrote straight into the services,
    # with no saga: the page must report exactly what the checker finds, every page of it.
    report = consistency(stack)
    expect(page.locator("#check-result")).to_contain_text(
        f"{report['checked']} sagas checked: {len(report['violations'])} violation(s)")
    expect(page.locator("#check-result")).to_have_class(re.compile("ok" if report["ok"] else "bad"))


def test_custom_faults_from_the_form_and_the_status_filter(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    name = unique("grace")
    page.get_by_label("Username", exact=True).fill(name)
    page.get_by_label("Fault at B").select_option("transient:N")
    page.locator("input[name=n_b]").fill("2")
    page.get_by_role("button", name="Start saga").click()
    expect(page.locator("#start-result")).to_contain_text("Started saga")
    saga_id = id_in(page.locator("#start-result"))
    wait_shown(page, saga_id, "COMPLETED")
    saga = get(stack, f"/sagas/{saga_id}")
    assert (saga["input"]["username"], saga["fail"]) == (name, {"b": "transient:2"})
    expect(page.locator("#timeline tr")).to_have_count(5)  # a, b failed twice, b, c
    page.get_by_label("Status").select_option("COMPENSATED")
    expect(page.locator(f"#saga-list button[data-saga='{saga_id}']")).to_have_count(0)
    page.get_by_label("Status").select_option("COMPLETED")
    expect(page.locator(f"#saga-list button[data-saga='{saga_id}']")).to_have_count(1)


def test_bad_input_is_explained(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    before = stack.count("orchestrator", "sagas")
    page.get_by_label("Address", exact=True).fill("")
    page.get_by_role("button", name="Start saga").click()
    expect(page.locator("#start-result")).to_contain_text("'address' must be 1 to 255 characters")
    assert stack.count("orchestrator", "sagas") == before


def test_logs_follow_the_selected_saga(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    truth = run_scenario(page, stack, "Failure at A", "COMPENSATED")
    page.get_by_role("button", name="Selected saga").click()
    expect(page.locator("#log-filter")).to_have_value(truth["saga_id"])
    expect(page.locator("#log")).to_contain_text(f"saga {truth['saga_id']}: COMPENSATED")
    for line in page.locator("#log span").all_inner_texts():
        assert truth["saga_id"] in line


def test_keyboard_only_start_select_and_switch_models(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    page.get_by_role("button", name="Success", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#start-result")).to_contain_text("Started saga")
    saga_id = id_in(page.locator("#start-result"))
    page.get_by_role("button", name="Failure at A").click()  # another saga takes the selection
    row = page.locator(f"#saga-list button[data-saga='{saga_id}']")
    expect(row).to_have_attribute("aria-current", "false")
    row.focus()
    drawn = page.locator("#saga-list").get_attribute("data-signature")
    # A saga started elsewhere makes the live list redraw: focus must survive the redraw.
    requests.post(f"{stack.urls['orchestrator']}/start", headers={"Prefer": "respond-async"},
                  json=fresh_user(), timeout=10)
    expect(page.locator("#saga-list")).not_to_have_attribute("data-signature", drawn or "")
    expect(row).to_be_focused()
    page.keyboard.press("Enter")
    expect(row).to_have_attribute("aria-current", "true")
    expect(page.locator(f"#detail[data-saga='{saga_id}']")).to_be_visible()
    # The model tabs: arrow keys move between them (and choose), the selection of each is kept.
    orchestration = page.get_by_role("tab", name="Orchestration")
    choreography = page.get_by_role("tab", name="Choreography")
    orchestration.focus()
    page.keyboard.press("ArrowRight")
    expect(choreography).to_be_focused()
    expect(choreography).to_have_attribute("aria-selected", "true")
    expect(orchestration).to_have_attribute("aria-selected", "false")
    expect(page.locator("#model-panel")).to_have_attribute("data-model", "choreography")
    expect(page.locator("#start-target")).to_contain_text("choreographed")
    page.keyboard.press("Home")
    expect(orchestration).to_have_attribute("aria-selected", "true")
    expect(page.locator(f"#detail[data-saga='{saga_id}']")).to_be_visible()


def test_phone_width_has_no_horizontal_scroll(page: Page, stack: Stack) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    open_dashboard(page, stack)
    run_scenario(page, stack, "Failure at B", "COMPENSATED")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    switch(page, "choreography")
    run_scenario(page, stack, "Failure at B", "COMPENSATED", "choreography")
    page.get_by_role("button", name="Compare with the other model").click()
    expect(page.locator("#compare .compare-column")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_a_service_down_is_reported_not_broken(page: Page, fresh_stack: Stack) -> None:
    stack = fresh_stack
    stack.kill("b")
    open_dashboard(page, stack)
    expect(page.locator("#banner")).to_contain_text("Service B is not answering")
    expect(page.locator("#services li[data-service=b]")).to_have_class("down")
    # B is unreachable: its invoke is retried, then B itself must be compensated (it might have
    # committed), which cannot reach it either: the saga stops, visibly, before undoing A.
    truth = run_scenario(page, stack, "Success", "COMPENSATION_FAILED")
    expect(page.locator("#detail-summary")).to_contain_text("needs attention")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "unknown")
    expect(page.locator("#rows tr[data-step=b] td").nth(1)).to_have_text("service not answering")
    assert step_states(page) == {"a": "applied", "b": "failed", "c": "pending"}
    assert stack.row_status("a", truth["saga_id"]) == "APPLIED"


# Drawn from the definition ---------------------------------------------------------------------

def test_the_form_and_the_steps_come_from_the_definition(page: Page, stack: Stack) -> None:
    definition = get(stack, "/definition")
    steps = [step["name"] for step in definition["steps"]]
    open_dashboard(page, stack)
    names = page.locator("#input-fields input").evaluate_all("inputs => inputs.map((i) => i.name)")
    assert names == definition["input_fields"], "one input per field of the definition, in order"
    rows = page.locator("#fault-rows .fault-row")
    assert [row.get_attribute("data-step") for row in rows.all()] == steps, "one fault row per step"
    expect(page.locator("#fault-rows select").first.locator("option")).to_have_count(
        1 + len(definition["fault_modes"]))
    kinds = {item.get_attribute("data-step"): item.get_attribute("data-kind")
             for item in page.locator("#steps li").all()}
    assert kinds == {step["name"]: step["kind"] for step in definition["steps"]}
    for step in definition["steps"]:
        expect(page.locator(f"#steps li[data-step='{step['name']}']")).to_contain_text(step["kind"])
        expect(page.locator(f"#steps li[data-step='{step['name']}']")).to_contain_text(step["action"])
        failure = page.get_by_role("button", name=f"Failure at {step['name'].upper()}", exact=True)
        expect(failure).to_be_visible()
    run_scenario(page, stack, "Success", "COMPLETED")
    nodes = page.locator("#diagram g.node").evaluate_all("nodes => nodes.map((n) => n.dataset.node)")
    assert nodes == ["orchestrator", *steps]
    expect(page.locator("#step-states li").first).to_contain_text(f"({definition['steps'][0]['kind']})")


def test_a_pivot_step_is_cancelled_not_compensated(page: Page, make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(SAGA_DEFINITION="signup@2")
    definition = get(stack, "/definition")
    assert [s["kind"] for s in definition["steps"]] == ["compensatable", "compensatable", "pivot"]
    open_dashboard(page, stack)
    expect(page.locator("#steps li[data-step=c]")).to_have_attribute("data-kind", "pivot")
    expect(page.locator(".fault-row[data-step=c]")).to_contain_text("pivot")
    truth = run_scenario(page, stack, "Failure at C", "COMPENSATED")
    cancels = [e for e in truth["events"] if e["action"] == "cancel"]
    assert cancels and all(e["step"] == "c" for e in cancels), truth["events"]
    expect(page.locator("#timeline tr[data-action=cancel]")).to_have_count(len(cancels))
    expect(page.locator("#diagram")).to_contain_text("1. cancel C")
    expect(page.locator("#diagram")).to_contain_text("3. undo A")
    assert step_states(page) == {"a": "compensated", "b": "compensated", "c": "cancelled"}
    expect(page.locator("#step-states li[data-step=c]")).to_contain_text("pivot")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "consistent")


def test_faults_off_hides_the_fault_controls(page: Page, make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(FAULTS_ENABLED="0")
    assert get(stack, "/definition")["faults_enabled"] is False
    open_dashboard(page, stack)
    # A system of its own: nothing has finished yet, and the charts say so.
    expect(page.locator("#chart-rate svg")).to_have_attribute("data-empty", "true")
    expect(page.locator("#chart-rate")).to_contain_text("No saga finished in the last 5 minutes")
    for model in ("orchestration", "choreography"):
        switch(page, model)
        expect(page.locator("#faults-off")).to_have_text(
            "Fault injection is off on this system (FAULTS_ENABLED=0)")
        expect(page.locator("#faults-off")).to_be_visible()
        expect(page.locator("#faults")).to_be_hidden()
        expect(page.locator("#scenarios button")).to_have_count(1)
        expect(page.locator("#scenarios button")).to_have_text("Success")
        truth = run_scenario(page, stack, "Success", "COMPLETED", model)
        assert truth["fail"] == {}


# Choreography ----------------------------------------------------------------------------------

def test_choreographed_failure_at_c_shows_its_events_arrows_and_rows(page: Page, stack: Stack) -> None:
    flow = get(stack, "/choreography/flow")
    open_dashboard(page, stack, "choreography")
    name = unique("chor")
    page.get_by_label("Username", exact=True).fill(name)
    truth = run_scenario(page, stack, "Failure at C", "COMPENSATED", "choreography")
    saga_id = truth["saga_id"]
    assert truth["input"]["username"] == name and truth["fail"] == {"c": "before_commit"}
    types = [event["type"] for event in truth["events"]]
    assert types == ["SignupRequested", "AccountCreated", "AddressStored", "PaymentFailed",
                     "AddressRemoved", "AccountRemoved"], types
    # The timeline: every event the observer saw, in order, by the service that published it.
    expect(page.locator("#events tr")).to_have_count(len(types))
    assert page.locator("#events td.type").all_inner_texts() == types
    assert page.locator("#events tr td:nth-child(3)").all_inner_texts() == [
        event["service"].upper() for event in truth["events"]]
    expect(page.locator("#events tr[data-type=PaymentFailed] td.err")).to_contain_text("before_commit")
    # The arrows: one per reaction in the flow table, marked with its order once seen.
    expect(page.locator("#diagram g.arrow")).to_have_count(len(flow["reactions"]))
    for reaction in flow["reactions"]:
        arrow = page.locator(f"#diagram g.arrow[data-event='{reaction['on']}']"
                             f"[data-to='{reaction['service']}']")
        expect(arrow).to_have_count(1)
        seen = reaction["on"] in types
        expect(arrow).to_have_attribute("data-seen", str(seen).lower())
        expect(arrow).to_have_attribute("data-order", str(types.index(reaction["on"]) + 1) if seen else "")
    for event_type, source, target in (("AccountCreated", "a", "b"), ("AddressStored", "b", "c"),
                                       ("PaymentFailed", "c", "b"), ("AddressRemoved", "b", "a"),
                                       ("SignupTimedOut", "a", "c")):
        arrow = page.locator(f"#diagram g.arrow[data-event={event_type}]")
        expect(arrow).to_have_attribute("data-from", source)
        expect(arrow).to_have_attribute("data-to", target)
    ends = page.locator("#diagram text.end")
    expect(ends.and_(page.locator("[data-event=AccountRemoved]"))).to_have_attribute("data-order", "6")
    expect(ends.and_(page.locator("[data-event=AccountFailed]"))).to_have_attribute("data-seen", "false")
    expect(page.locator("#diagram")).to_contain_text("4. PaymentFailed")
    # The services as the events say, and the rows they hold, with the verdict.
    assert step_states(page) == {"a": "compensated", "b": "compensated", "c": "failed"}
    expect(page.locator("#diagram g.node[data-node=c]")).to_have_attribute("data-state", "failed")
    records = get(stack, f"/choreography/sagas/{saga_id}/records")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", records["verdict"])
    assert records["verdict"] == "consistent"
    for step, (status, value) in {"a": ("COMPENSATED", name), "b": ("COMPENSATED", truth["input"]["address"]),
                                  "c": ("CANCELLED", "")}.items():
        assert records["rows"][step]["status"] == status == stack.row_status(step, saga_id)
        expect(page.locator(f"#rows tr[data-step={step}] td").nth(1)).to_have_text(status)
        expect(page.locator(f"#rows tr[data-step={step}] td").nth(2)).to_have_text(value)
    expect(page.locator("#detail-summary")).to_contain_text("Step C failed")
    expect(page.locator("#dead-letters-box")).to_be_hidden()  # none here


def test_failure_at_c_both_ways_side_by_side(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    orchestrated = run_scenario(page, stack, "Failure at C", "COMPENSATED")
    switch(page, "choreography")
    choreographed = run_scenario(page, stack, "Failure at C", "COMPENSATED", "choreography")
    # Each model keeps its own selected saga across a switch.
    switch(page, "orchestration")
    wait_shown(page, orchestrated["saga_id"], "COMPENSATED")
    expect(page.locator("#detail")).to_have_attribute("data-model", "orchestration")
    switch(page, "choreography")
    wait_shown(page, choreographed["saga_id"], "COMPENSATED")
    page.get_by_role("button", name="Compare with the other model").click()
    expect(page.locator("#compare-title")).to_be_focused()
    expect(page.locator("#compare-note")).to_contain_text("c=before_commit")
    left = page.locator("#compare .compare-column[data-model=orchestration]")
    right = page.locator("#compare .compare-column[data-model=choreography]")
    expect(left).to_have_attribute("data-saga", orchestrated["saga_id"])
    expect(right).to_have_attribute("data-saga", choreographed["saga_id"])
    expect(left.locator(".compare-timeline li")).to_have_count(len(orchestrated["events"]))
    expect(right.locator(".compare-timeline li")).to_have_count(len(choreographed["events"]))
    expect(left.locator(".compare-timeline")).to_contain_text("C compensate #1: ok")
    expect(right.locator(".compare-timeline")).to_contain_text("AddressRemoved (B)")
    for column in (left, right):
        expect(column.locator(".verdict")).to_have_attribute("data-verdict", "consistent")
        expect(column).to_contain_text("COMPENSATED")
    left.get_by_role("button", name="Show it").click()  # to the other model, its saga selected
    expect(page.locator("#model-panel")).to_have_attribute("data-model", "orchestration")
    wait_shown(page, orchestrated["saga_id"], "COMPENSATED")
    page.get_by_role("button", name="Close the comparison").click()
    expect(page.locator("#compare")).to_be_hidden()


def test_dead_letters_are_listed_only_when_there_are_any(page: Page,
                                                        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    open_dashboard(page, stack, "choreography")
    run_scenario(page, stack, "Success", "COMPLETED", "choreography")
    expect(page.locator("#dead-letters-box")).to_be_hidden()
    # An event B never takes, in A's outbox for B: A's relay hands it over, B refuses it for good.
    poison = Envelope("PaymentRegistered", uuid.uuid4().hex, "c", {})
    with stack.engines["a"].begin() as connection:
        connection.execute(text(
            "INSERT INTO outbox (event_id, destination, event_type, saga_id, envelope, status, attempts, "
            "next_attempt_at, created_at) VALUES (:e, 'b', :t, :s, :v, 'PENDING', 0, :n, :n)"),
            {"e": poison.event_id, "t": poison.type, "s": poison.saga_id, "v": poison.dumps(), "n": utcnow()})
    run_scenario(page, stack, "Success", "COMPLETED", "choreography")  # a commit at A wakes its relay
    box = page.locator("#dead-letters-box")
    expect(box).to_be_visible(timeout=FINAL)
    expect(box.locator("li")).to_have_count(1)
    expect(box.locator("li")).to_contain_text("Service A outbox: PaymentRegistered → B")
    expect(box.get_by_role("button", name=f"saga …{poison.saga_id[-8:]}")).to_be_visible()
    assert len(get(stack, "/choreography/dead-letters")["dead_letters"]) == 1
    # Redriven from the page: A sends it again (and B refuses it again, as it always will).
    box.get_by_role("button", name="Redrive").click()
    expect(box.get_by_role("button", name="Redriven (1)")).to_be_visible()
    assert f"dead-lettered event {poison.event_id} redriven from the outbox" in stack.log("a")
    switch(page, "orchestration")
    expect(box).to_be_hidden()  # the choreography's, shown with it


# Run again, edit and run -----------------------------------------------------------------------

def test_run_again_and_edit_and_run(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    name = unique("again")
    page.get_by_label("Username", exact=True).fill(name)
    first = run_scenario(page, stack, "Failure at B", "COMPENSATED")
    page.get_by_role("button", name="Run again", exact=True).click()
    expect(page.locator("#action-result")).to_contain_text("Started saga")
    again_id = id_in(page.locator("#action-result"))
    assert again_id != first["saga_id"]
    wait_shown(page, again_id, "COMPENSATED")
    again = get(stack, f"/sagas/{again_id}")
    assert same_but_renamed(again["input"], first["input"]) and first["input"]["username"] == name
    assert again["fail"] == first["fail"] == {"b": "before_commit"}
    # Edit and run: the input and faults go into the form, one thing is changed, it starts.
    page.get_by_label("Username", exact=True).fill(unique("someone-else"))
    page.get_by_label("Fault at B").select_option("")
    page.locator("#edit-run").click()
    expect(page.get_by_label("Username", exact=True)).to_have_value(renamed(name))
    expect(page.get_by_label("Username", exact=True)).to_be_focused()
    expect(page.locator("select[name=fail_b]")).to_have_value("before_commit")
    expect(page.locator("#start-result")).to_contain_text(again_id[-8:])
    page.get_by_label("Username", exact=True).fill(f"{name}-edited")
    page.get_by_role("button", name="Start saga").click()
    expect(page.locator("#start-result")).to_contain_text("Started saga")
    edited_id = id_in(page.locator("#start-result"))
    wait_shown(page, edited_id, "COMPENSATED")
    edited = get(stack, f"/sagas/{edited_id}")
    assert edited["input"] == {**first["input"], "username": f"{name}-edited"}
    assert edited["fail"] == first["fail"]


def test_run_again_choreographed_and_edit_from_the_comparison(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack, "choreography")
    page.get_by_label("Username", exact=True).fill(unique("again"))
    page.get_by_label("Fault at A").select_option("delay:N")  # faults no other test uses
    page.locator("input[name=n_a]").fill("7")
    page.get_by_role("button", name="Start saga").click()
    expect(page.locator("#start-result")).to_contain_text("Started saga")
    first_id = id_in(page.locator("#start-result"))
    wait_shown(page, first_id, "COMPLETED")
    first = get(stack, f"/choreography/sagas/{first_id}")
    assert first["fail"] == {"a": "delay:7"}
    page.get_by_role("button", name="Run again", exact=True).click()
    expect(page.locator("#action-result")).to_contain_text("Started saga")
    again_id = id_in(page.locator("#action-result"))
    assert again_id != first_id
    wait_shown(page, again_id, "COMPLETED")
    again = get(stack, f"/choreography/sagas/{again_id}")
    assert same_but_renamed(again["input"], first["input"]) and again["fail"] == first["fail"]
    # No orchestrated saga had these faults: the comparison offers to run one, then shows it.
    page.get_by_role("button", name="Compare with the other model").click()
    left = page.locator("#compare .compare-column[data-model=orchestration]")
    expect(left).to_contain_text("No orchestrated saga with these faults")
    left.get_by_role("button", name="Run it orchestrated").click()
    expect(left).to_have_attribute("data-saga", SAGA_ID)
    expect(left).to_contain_text("COMPLETED", timeout=FINAL)
    orchestrated = get(stack, f"/sagas/{left.get_attribute('data-saga')}")
    assert same_but_renamed(orchestrated["input"], first["input"]) and orchestrated["fail"] == first["fail"]
    # Edit and run from the other model's column: the form switches to that model.
    expect(page.locator("#model-panel")).to_have_attribute("data-model", "choreography")
    page.get_by_label("Username", exact=True).fill(unique("someone-else"))
    left.get_by_role("button", name="Edit and run").click()
    expect(page.locator("#model-panel")).to_have_attribute("data-model", "orchestration")
    expect(page.get_by_label("Username", exact=True)).to_have_value(renamed(first["input"]["username"]))
    expect(page.locator("select[name=fail_a]")).to_have_value("delay:N")
    expect(page.locator("input[name=n_a]")).to_have_value("7")


# Charts ----------------------------------------------------------------------------------------

def test_charts_plot_the_sagas_that_finished(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    run_scenario(page, stack, "Success", "COMPLETED")
    run_scenario(page, stack, "Failure at A", "COMPENSATED")
    for model, series in (("orchestration", ("completed", "compensated")), ("choreography", ("completed",))):
        if model == "choreography":
            switch(page, model)
            run_scenario(page, stack, "Success", "COMPLETED", model)
        adjective = "orchestrated" if model == "orchestration" else "choreographed"
        expect(page.locator("#charts-title")).to_contain_text(adjective)
        rate = page.locator("#chart-rate svg")
        expect(page.locator("#chart-rate-title")).to_contain_text(adjective)
        expect(rate).to_have_attribute("data-empty", "false")  # redrawn every few seconds
        for name in series:
            expect(rate.locator(f"circle.point[data-series={name}]").first).to_be_attached()
        values = rate.locator("circle.point").evaluate_all("ps => ps.map((p) => Number(p.dataset.value))")
        assert values and all(v > 0 for v in values), values
        stats = get(stack, f"/stats?minutes=5&bucket=10&model={model}")
        assert sum(b["completed"] for b in stats["buckets"]) > 0
        duration = page.locator("#chart-duration svg")
        expect(duration.locator("circle.point[data-series=p50_ms]").first).to_be_attached()
        expect(duration.locator("circle.point[data-series=p99_ms]").first).to_be_attached()
        expect(page.locator("#chart-duration-desc")).to_contain_text("p50")
        expect(rate.locator("text.tick", has_text="now")).to_have_count(1)


# The console -----------------------------------------------------------------------------------

def test_no_console_errors_or_csp_violations(page: Page, stack: Stack, console: Console) -> None:
    open_dashboard(page, stack)
    run_scenario(page, stack, "Failure at C", "COMPENSATED")
    page.get_by_role("button", name="Run again", exact=True).click()
    expect(page.locator("#action-result")).to_contain_text("Started saga")
    switch(page, "choreography")
    run_scenario(page, stack, "Failure at C", "COMPENSATED", "choreography")
    run_scenario(page, stack, "Slow run (watch it)", "COMPLETED", "choreography")
    page.get_by_role("button", name="Compare with the other model").click()
    expect(page.locator("#compare .compare-column")).to_have_count(2)
    expect(page.locator("#chart-rate circle.point").first).to_be_attached()
    page.get_by_role("tab", name="Orchestration").click()
    page.locator("#edit-run").click()
    assert console.problems(page, allow_http_errors=False) == [], "not even a failed request"
    # The watcher itself works: an inline style is refused by the policy, and reported.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">inline</p>')")
    page.wait_for_function("window.__cspViolations.length > 0")
    assert any("style-src" in problem for problem in console.problems(page))
    page.evaluate("window.__cspViolations = []")
    console.errors.clear()
