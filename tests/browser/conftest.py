"""A real headless Chromium (Debian's), driven by Playwright; never a downloaded browser.

Every page a test opens is watched: a script error or a Content-Security-Policy violation
fails the test, whatever it was checking.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from scripts.chromium import CHROMIUM, FLAGS

# What a page shows may lag a poll or two behind (the charts redraw every 5 s) on a busy machine.
expect.set_options(timeout=15_000)

# Runs before the page's own scripts (injected by the browser, so the page's CSP does not apply).
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""
# What a test may cause on purpose (a 400 for bad input): the browser logs every HTTP error.
HTTP_ERROR = "Failed to load resource: the server responded with a status of"


@dataclass
class Console:
    """What the page said in its console, and what it did wrong."""

    errors: list[str] = field(default_factory=list)  # console errors and warnings
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions

    def listen(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(message.text)

    def problems(self, page: Page, allow_http_errors: bool = True) -> list[str]:
        """Script errors, CSP violations and (unless allowed) failed requests, so far."""
        violations = page.evaluate("window.__cspViolations || []") if not page.is_closed() else []
        errors = [e for e in self.errors if not (allow_http_errors and e.startswith(HTTP_ERROR))]
        return [*(f"CSP: {v}" for v in violations), *self.page_errors, *errors]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Browser, console: Console, request: pytest.FixtureRequest) -> Iterator[Page]:
    if "make_stack" in request.fixturenames:
        # Set up first, so torn down last: the systems a test starts outlive the page polling them.
        request.getfixturevalue("make_stack")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    page.on("console", console.listen)
    page.on("pageerror", lambda error: console.page_errors.append(f"uncaught: {error}"))
    page.set_default_timeout(20_000)
    yield page
    problems = console.problems(page)
    context.close()
    assert not problems, f"the page reported problems: {problems}"
