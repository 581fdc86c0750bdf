"""Make the README's dashboard screenshots: `make screenshots` (needs Debian's chromium).

Starts the four processes on throwaway SQLite files, runs scenarios through the page
in headless Chromium, and saves PNGs under docs/screenshots/.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from scripts.chromium import CHROMIUM, FLAGS
from scripts.stack import ROOT, Stack

OUT = ROOT / "docs" / "screenshots"


def scenario(page: Page, label: str, final: str) -> None:
    page.get_by_role("button", name=label, exact=True).click()
    expect(page.locator("#start-result")).to_contain_text("Started saga")
    saga_id = re.search(r"[0-9a-f]{32}", page.locator("#start-result").inner_text())
    assert saga_id
    expect(page.locator(f"#detail[data-saga='{saga_id.group(0)}']")).to_have_attribute(
        "data-status", final, timeout=30_000)
    expect(page.locator("#verdict")).not_to_have_attribute("data-verdict", "in_progress")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        stack = Stack(Path(workdir)).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                page = browser.new_page(viewport={"width": 1440, "height": 1100})
                page.goto(stack.urls["orchestrator"] + "/")
                scenario(page, "Success", "COMPLETED")
                scenario(page, "Transient failures (retried)", "COMPLETED")
                scenario(page, "Failure at B", "COMPENSATED")
                scenario(page, "Failure at C", "COMPENSATED")
                page.screenshot(path=OUT / "dashboard-failure-at-c.png", full_page=True)
                scenario(page, "Failed compensation", "COMPENSATION_FAILED")
                page.screenshot(path=OUT / "dashboard-failed-compensation.png", full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})
                page.evaluate("document.querySelector('#detail-title').scrollIntoView()")
                page.screenshot(path=OUT / "dashboard-phone.png")
                browser.close()
        finally:
            stack.stop()
    for path in sorted(OUT.glob("*.png")):
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
