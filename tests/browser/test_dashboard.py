"""The dashboard in real headless Chromium: start scenarios, watch them, check against the truth."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from scripts.stack import Stack

pytestmark = pytest.mark.browser


def open_dashboard(page: Page, stack: Stack) -> None:
    page.goto(stack.urls["orchestrator"] + "/")
    expect(page.locator("select[name=fail_b] option")).to_have_count(8)  # no fault + 7 modes


def run_scenario(page: Page, stack: Stack, label: str, final: str) -> dict:
    """Click a scenario button; wait until the page shows it finished; return the saga's truth."""
    page.get_by_role("button", name=label, exact=True).click()
    expect(page.locator("#start-result")).to_contain_text("Started saga")
    saga_id = re.search(r"[0-9a-f]{32}", page.locator("#start-result").inner_text()).group(0)
    detail = page.locator(f"#detail[data-saga='{saga_id}']")
    expect(detail).to_have_attribute("data-status", final, timeout=30_000)
    truth = requests.get(f"{stack.urls['orchestrator']}/sagas/{saga_id}", timeout=5).json()
    assert truth["status"] == final, "the page shows what the saga log says"
    return truth


def step_states(page: Page) -> dict[str, str]:
    return {item.get_attribute("data-step"): item.get_attribute("data-state")
            for item in page.locator("#step-states li").all()}


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
    expect(page.locator("#check-result")).to_contain_text("finished sagas checked")
    # The shared system also holds rows that contract tests wrote straight into the services,
    # with no saga: the page must report exactly what the checker finds.
    report = requests.get(f"{stack.urls['orchestrator']}/consistency", timeout=30).json()
    expect(page.locator("#check-result")).to_contain_text(
        f"{report['checked']} finished sagas checked: {len(report['violations'])} violation(s)")
    expect(page.locator("#check-result")).to_have_class(re.compile("ok" if report["ok"] else "bad"))


def test_custom_faults_from_the_form_and_the_status_filter(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    page.get_by_label("Username").fill("grace")
    page.get_by_label("Service B").select_option("transient:N")
    page.locator("input[name=n_b]").fill("2")
    page.get_by_role("button", name="Start saga").click()
    expect(page.locator("#start-result")).to_contain_text("Started saga")
    saga_id = re.search(r"[0-9a-f]{32}", page.locator("#start-result").inner_text()).group(0)
    expect(page.locator(f"#detail[data-saga='{saga_id}']")).to_have_attribute("data-status", "COMPLETED")
    saga = requests.get(f"{stack.urls['orchestrator']}/sagas/{saga_id}", timeout=5).json()
    assert (saga["input"]["username"], saga["fail"]) == ("grace", {"b": "transient:2"})
    expect(page.locator("#timeline tr")).to_have_count(5)  # a, b failed twice, b, c
    page.get_by_label("Status").select_option("COMPENSATED")
    expect(page.locator(f"#saga-list button[data-saga='{saga_id}']")).to_have_count(0)
    page.get_by_label("Status").select_option("COMPLETED")
    expect(page.locator(f"#saga-list button[data-saga='{saga_id}']")).to_have_count(1)


def test_bad_input_is_explained(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    before = stack.count("orchestrator", "sagas")
    page.get_by_label("Address").fill("")
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


def test_keyboard_only_start_and_select(page: Page, stack: Stack) -> None:
    open_dashboard(page, stack)
    page.get_by_role("button", name="Success", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#start-result")).to_contain_text("Started saga")
    saga_id = re.search(r"[0-9a-f]{32}", page.locator("#start-result").inner_text()).group(0)
    page.get_by_role("button", name="Failure at A").click()  # another saga takes the selection
    row = page.locator(f"#saga-list button[data-saga='{saga_id}']")
    expect(row).to_have_attribute("aria-current", "false")
    row.focus()
    drawn = page.locator("#saga-list").get_attribute("data-signature")
    # A saga started elsewhere makes the live list redraw: focus must survive the redraw.
    requests.post(f"{stack.urls['orchestrator']}/start", headers={"Prefer": "respond-async"},
                  json={"username": "elsewhere", "address": "a", "payment": "p"}, timeout=10)
    expect(page.locator("#saga-list")).not_to_have_attribute("data-signature", drawn or "")
    expect(row).to_be_focused()
    page.keyboard.press("Enter")
    expect(row).to_have_attribute("aria-current", "true")
    expect(page.locator(f"#detail[data-saga='{saga_id}']")).to_be_visible()


def test_phone_width_has_no_horizontal_scroll(page: Page, stack: Stack) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    open_dashboard(page, stack)
    run_scenario(page, stack, "Failure at B", "COMPENSATED")
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
