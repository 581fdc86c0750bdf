"""Make the README's dashboard screenshots: `make screenshots` (needs Debian's chromium).

Starts the four processes on throwaway SQLite files, runs scenarios through the page in
headless Chromium, in both models, then a minute of mixed traffic for the charts, and saves
PNGs under docs/screenshots/.
"""

from __future__ import annotations

import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Page, expect, sync_playwright

from scripts.chromium import CHROMIUM, FLAGS
from scripts.stack import ROOT, Stack

OUT = ROOT / "docs" / "screenshots"
USER = {"address": "1 Main Street", "payment": "visa-4242"}  # each saga a username of its own
# The charts' traffic: mostly sign-ups that complete, some that fail and are undone, a few
# whose undo fails; some retried or slow, so that the durations spread.
MIX: list[tuple[int, dict[str, str]]] = [
    (10, {}), (2, {"a": "before_commit"}), (2, {"b": "before_commit"}), (3, {"c": "before_commit"}),
    (2, {"b": "transient:2"}), (2, {"c": "delay:300"}), (1, {"b": "compensate_fail", "c": "before_commit"}),
]
# Where each model starts a saga (orchestration, choreography), with the headers it takes.
STARTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("/start", {"Prefer": "respond-async"}), ("/choreography/signups", {}))


def scenario(page: Page, label: str, final: str) -> None:
    page.get_by_role("button", name=label, exact=True).click()
    expect(page.locator("#start-result")).to_contain_text("Started saga")  # "Starting…" until then
    saga_id = re.search(r"[0-9a-f]{32}", page.locator("#start-result").inner_text())
    assert saga_id
    expect(page.locator(f"#detail[data-saga='{saga_id.group(0)}']")).to_have_attribute(
        "data-status", final, timeout=30_000)
    expect(page.locator("#verdict")).not_to_have_attribute("data-verdict", "in_progress")
    # The list and the charts are polled apart from the detail: wait until they have caught up.
    expect(page.locator(f"#saga-list button[data-saga='{saga_id.group(0)}']")).to_contain_text(
        final.replace("_", " "))
    point = page.locator(f"#chart-rate circle.point[data-series={final.lower()}]").first
    expect(point).to_be_attached(timeout=15_000)


def traffic(stack: Stack, seconds: float) -> None:
    """Sagas of both models with mixed faults, faster and slower in turn, for `seconds`."""
    rng = random.Random(7)
    weights, faults = zip(*MIX, strict=True)
    session = requests.Session()
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        for path, headers in STARTS:
            body: dict[str, Any] = {**USER, "username": f"ada-{rng.randrange(16**6):06x}",
                                    "fail": rng.choices(faults, weights)[0]}
            answer = session.post(stack.urls["orchestrator"] + path, json=body, headers=headers, timeout=10)
            assert answer.status_code == 202, answer.text
        elapsed = seconds - (end - now)
        time.sleep(0.15 if elapsed % 20 < 10 else 0.6)  # 10 s busy, 10 s quieter, in turn


def wait_until_finished(stack: Stack) -> None:
    """Until neither model has a saga still running, so that the charts show every outcome."""
    deadline = time.monotonic() + 60
    for path in ("/sagas", "/choreography/sagas"):
        for status in ("RUNNING", "COMPENSATING"):
            while requests.get(f"{stack.urls['orchestrator']}{path}?limit=1&status={status}",
                               timeout=10).json()["sagas"] and time.monotonic() < deadline:
                time.sleep(0.5)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        stack = Stack(Path(workdir)).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                page = browser.new_page(viewport={"width": 1440, "height": 1100})
                page.goto(stack.urls["orchestrator"] + "/")
                expect(page.locator("body")).to_have_attribute("data-ready", "true")
                scenario(page, "Success", "COMPLETED")
                scenario(page, "Transient failures at B (retried)", "COMPLETED")
                scenario(page, "Failure at B", "COMPENSATED")
                scenario(page, "Failure at C", "COMPENSATED")
                page.screenshot(path=OUT / "dashboard-failure-at-c.png", full_page=True)
                scenario(page, "Failed compensation", "COMPENSATION_FAILED")
                page.screenshot(path=OUT / "dashboard-failed-compensation.png", full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})
                page.evaluate("document.querySelector('#detail-title').scrollIntoView()")
                page.screenshot(path=OUT / "dashboard-phone.png")

                page.set_viewport_size({"width": 1440, "height": 1100})
                page.get_by_role("tab", name="Choreography").click()
                scenario(page, "Success", "COMPLETED")
                scenario(page, "Failure at B", "COMPENSATED")
                scenario(page, "Failure at C", "COMPENSATED")
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=OUT / "dashboard-choreography-failure-at-c.png", full_page=True)

                traffic(stack, seconds=50)
                wait_until_finished(stack)
                page.get_by_role("tab", name="Orchestration").click()
                # Drawn again every few seconds: wait until it holds every outcome of the traffic.
                for series in ("completed", "compensated", "compensation_failed"):
                    point = page.locator(f"#chart-rate circle.point[data-series={series}]").first
                    expect(point).to_be_attached(timeout=30_000)
                page.locator(".charts").screenshot(path=OUT / "dashboard-charts.png")
                browser.close()
        finally:
            stack.stop()
    for path in sorted(OUT.glob("*.png")):
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
