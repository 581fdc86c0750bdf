"""In-process tests: set the process up as each of the four does at start."""

from __future__ import annotations

import pytest

from common.tracing import setup_tracing


@pytest.fixture(autouse=True, scope="session")
def tracing() -> None:
    """Every process installs its tracer provider before it makes a saga's trace (the engine
    keeps the root's traceparent); in-process tests do the same, whichever test runs first."""
    setup_tracing("unit-tests")
