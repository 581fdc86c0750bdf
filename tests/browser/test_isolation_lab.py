"""The isolation lab's page in real Chromium: the race run from the page in both models, with
and without the semantic lock, what it shows checked against the API and A's real table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Page, expect
from sqlalchemy import text

from scripts.stack import Stack
from tests.browser.conftest import Console
from tests.support.stacks import LAB_RACE, TEST_DATABASE_URL

RACE = 45_000  # ms: both sagas end within seconds; a loaded machine gets room


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A system of its own, with the lab race's deadline (the shared one's is the tests' 4 s)."""
    running = Stack(tmp_path_factory.mktemp("lab"), TEST_DATABASE_URL, settings=LAB_RACE).start()
    yield running
    running.stop()


def holders(stack: Stack, username: str) -> dict[str, str]:
    with stack.engines["a"].connect() as connection:
        return dict(connection.execute(text("SELECT saga_id, status FROM table_a WHERE username = :u"),
                                       {"u": username}).all())


def run_race(page: Page, stack: Stack, label: str) -> dict[str, str]:
    page.goto(f"{stack.urls['orchestrator']}/labs/isolation")
    page.get_by_role("button", name=label).click()
    expect(page.locator("#lab-status")).to_have_text("Done.", timeout=RACE)
    box = page.locator("#lab-result")
    expect(box).to_be_visible()
    return {"username": page.locator("#lab-username").inner_text(),
            "anomaly": str(box.get_attribute("data-anomaly")),
            "second": str(box.get_attribute("data-second"))}


@pytest.mark.parametrize("model", ["Orchestration", "Choreography"])
def test_the_anomaly_without_a_countermeasure(page: Page, stack: Stack, console: Console, model: str) -> None:
    shown = run_race(page, stack, f"{model}, no countermeasure")
    assert (shown["anomaly"], shown["second"]) == ("true", "COMPENSATED")
    expect(page.locator("#lab-verdict")).to_contain_text("The anomaly happened")
    expect(page.locator("#lab-explanation")).to_contain_text("dirty read")
    expect(page.locator("#lab-second")).to_contain_text("is taken")
    # A's row changed hands: the first held it, then it was gone; the second never got it.
    holder = page.locator("#lab-holder li")
    expect(holder.first).to_contain_text("the first saga")
    expect(page.locator("#lab-holder li[data-who=first]").last).to_contain_text("gone")
    rows = holders(stack, shown["username"])
    assert "APPLIED" not in rows.values() and "PENDING" not in rows.values(), rows
    assert console.problems(page) == []


@pytest.mark.parametrize("model", ["Orchestration", "Choreography"])
def test_the_semantic_lock_prevents_it(page: Page, stack: Stack, console: Console, model: str) -> None:
    shown = run_race(page, stack, f"{model}, semantic lock")
    assert (shown["anomaly"], shown["second"]) == ("false", "COMPLETED")
    expect(page.locator("#lab-verdict")).to_contain_text("No anomaly")
    expect(page.locator("#lab-explanation")).to_contain_text("PENDING")
    expect(page.locator("#lab-holder li[data-who=first]").first).to_contain_text("PENDING")
    expect(page.locator("#lab-holder li[data-who=second]").last).to_contain_text("APPLIED")
    assert sorted(holders(stack, shown["username"]).values()) == ["APPLIED", "COMPENSATED"]
    path = "/sagas" if model == "Orchestration" else "/choreography/sagas"
    second = page.locator("#lab-second code").inner_text()
    saga = requests.get(f"{stack.urls['orchestrator']}{path}/{second}", timeout=10).json()
    assert (saga["status"], saga["isolation"]) == ("COMPLETED", "semantic_lock")
    assert console.problems(page) == []


def test_the_dashboard_links_to_the_lab(page: Page, stack: Stack) -> None:
    page.goto(stack.urls["orchestrator"])
    page.get_by_role("link", name="The isolation lab").click()
    expect(page.get_by_role("heading", name="The isolation lab")).to_be_visible()
