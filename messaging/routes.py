"""What a transport must know of a saga's events, and nothing more: who may publish each type,
and which types each service takes from the others (the observer takes them all)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Routes:
    sources: Mapping[str, str]  # event type -> the only party that may publish it
    takes: Mapping[str, tuple[str, ...]]  # service -> the event types it reacts to from others

    @cached_property
    def types(self) -> frozenset[str]:
        return frozenset(self.sources)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.takes)

    def publishes(self, party: str) -> tuple[str, ...]:
        """The event types `party` owns, sorted."""
        return tuple(sorted(t for t, owner in self.sources.items() if owner == party))
