"""How a saga is defined: steps in order, each with its participant, input, kind and policies.

The engine runs any definition; `orchestrator/saga.py` holds the sign-up's. A definition is
named and versioned: every saga records the one it started under and is driven by it to
the end, so changing a definition never derails a saga already in flight.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum


class StepKind(StrEnum):
    """The standard kinds of saga transaction."""

    COMPENSATABLE = "compensatable"  # undone by its compensation when the saga fails
    PIVOT = "pivot"  # the go/no-go point: never compensated; once it commits, the saga completes
    RETRIABLE = "retriable"  # after the pivot: retried until it succeeds, never compensated


@dataclass(frozen=True)
class Step:
    """One local transaction of a saga, run by one participant service."""

    name: str  # how the saga log, the faults and the dashboard name the step
    participant: str  # the service that runs it (its URL is SERVICE_<NAME>_URL)
    receives: tuple[str, ...]  # the saga's input fields sent to the participant, nothing else
    action: str  # what its /invoke does, in words
    compensation: str | None = None  # what its /compensate does; None when it cannot be undone
    kind: StepKind = StepKind.COMPENSATABLE
    timeout: float | None = None  # seconds per attempt; None: CALL_TIMEOUT
    retries: int | None = None  # invoke retries after the first attempt; None: CALL_RETRIES
    compensation_retries: int | None = None  # None: COMPENSATION_RETRIES

    def __post_init__(self) -> None:
        if (self.kind is StepKind.COMPENSATABLE) != (self.compensation is not None):
            raise ValueError(f"step {self.name}: a compensatable step, and only one, has a compensation")
        if not self.receives:
            raise ValueError(f"step {self.name}: receives no input")


@dataclass(frozen=True)
class SagaDefinition:
    """A named, versioned sequence of steps; checked when it is made."""

    name: str
    version: int
    steps: tuple[Step, ...]
    description: str = ""

    def __post_init__(self) -> None:
        names = [step.name for step in self.steps]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"{self.key}: needs steps with distinct names")
        # compensatable* [pivot] retriable*: nothing after the point of no return is undone.
        order = [StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE]
        ranks = [order.index(step.kind) for step in self.steps]
        if ranks != sorted(ranks) or ranks.count(1) > 1:
            raise ValueError(f"{self.key}: steps must be compensatable, then at most one pivot, "
                             "then retriable")

    @property
    def key(self) -> str:
        """`name@version`, as settings and the dashboard write it."""
        return f"{self.name}@{self.version}"

    @property
    def input_fields(self) -> tuple[str, ...]:
        """Every field a saga of this definition takes, in the order the steps receive them."""
        return tuple(dict.fromkeys(name for step in self.steps for name in step.receives))

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(step.participant for step in self.steps))


@dataclass(frozen=True)
class Definitions:
    """Every definition the engine can drive, and the one new sagas start under."""

    known: tuple[SagaDefinition, ...]
    default: SagaDefinition
    _by_key: dict[tuple[str, int], SagaDefinition] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_key = {(d.name, d.version): d for d in self.known}
        if len(by_key) != len(self.known) or (self.default.name, self.default.version) not in by_key:
            raise ValueError("definitions must be distinct and include the default")
        object.__setattr__(self, "_by_key", by_key)

    @classmethod
    def of(cls, known: Iterable[SagaDefinition], default_key: str) -> Definitions:
        """The registry with `default_key` (`name@version`) as the default; ValueError if unknown."""
        known = tuple(known)
        for definition in known:
            if definition.key == default_key:
                return cls(known, definition)
        raise ValueError(f"unknown saga definition {default_key!r}; known: "
                         f"{', '.join(d.key for d in known)}")

    def get(self, name: str, version: int) -> SagaDefinition | None:
        return self._by_key.get((name, version))

    def __iter__(self) -> Iterator[SagaDefinition]:
        return iter(self.known)

    @property
    def participants(self) -> tuple[str, ...]:
        """Every service any known definition calls."""
        return tuple(dict.fromkeys(p for d in self.known for p in d.participants))
