"""An envelope kept in a table comes back as it was written: every field, the optional ones too."""

from __future__ import annotations

import pytest

from messaging.events import Envelope


@pytest.mark.parametrize("traceparent", [None, "00-" + "a" * 32 + "-" + "b" * 16 + "-01"])
def test_a_stored_envelope_reads_back_whole(traceparent: str | None) -> None:
    envelope = Envelope("AccountCreated", "saga-1", "a", {"input": {"address": "1 Main St"}},
                        traceparent=traceparent)
    assert Envelope.stored(envelope.dumps()) == envelope
