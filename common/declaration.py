"""How a saga is declared: the participant services, and the saga's steps in order, each with
its service, input, kind, policies and the events it publishes when choreographed.

One short file declares a saga (`sagas/signup.py` the sign-up): from it come the
orchestrator's definitions, the choreography's flow (`choreography/flow.py` derives who reacts
to what), each participant's spec, and the default URLs and ports. A definition is named and
versioned: every saga records the one it started under and is driven by it to the end, in
either model, so changing a definition never derails a saga already in flight.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_MODULE = "sagas.signup"
# A step's or a service's name: the saga log and the observer keep a step's in 8 characters, and a
# service's goes into its settings' names (SERVICE_<NAME>_URL) and its broker account's.
NAME = re.compile(r"[a-z][a-z0-9_]{0,7}")
RESERVED = frozenset({"observer", "broker"})  # where events go besides the services


def _check_name(what: str, name: str) -> None:
    if not NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r}: a name is a lowercase letter, then up to 7 lowercase "
                         "letters, digits or underscores")


class StepKind(StrEnum):
    """The standard kinds of saga transaction."""

    COMPENSATABLE = "compensatable"  # undone by its compensation when the saga fails
    PIVOT = "pivot"  # the go/no-go point: never compensated; once it commits, the saga completes
    RETRIABLE = "retriable"  # after the pivot: retried until it succeeds, never compensated


@dataclass(frozen=True)
class Events:
    """What a step's service says of its local transaction in the choreographed saga: it was
    applied, it failed; it was undone, undoing it failed (a step that is never undone, the
    last, need not name those two)."""

    applied: str
    failed: str
    undone: str | None = None
    undo_failed: str | None = None

    @classmethod
    def named(cls, noun: str, applied: str) -> Events:
        """`Events.named("Account", "Created")`: AccountCreated, AccountFailed, AccountRemoved,
        AccountRemovalFailed."""
        return cls(noun + applied, noun + "Failed", noun + "Removed", noun + "RemovalFailed")

    def __iter__(self) -> Iterator[str]:
        return iter(name for name in (self.applied, self.failed, self.undone, self.undo_failed) if name)


@dataclass(frozen=True)
class Step:
    """One local transaction of a saga, run by one participant service."""

    name: str  # how the saga log, the faults and the dashboard name the step
    participant: str  # the service that runs it
    receives: tuple[str, ...]  # the saga's input fields sent to the participant, nothing else
    does: str  # what its /invoke does, in words
    undo: str | None = None  # what its /compensate does, in words; None when it cannot be undone
    events: Events | None = None  # what it publishes in the choreographed saga
    kind: StepKind = StepKind.COMPENSATABLE
    locks: bool = False  # under a semantic lock, its row is PENDING until the saga completes
    timeout: float | None = None  # seconds per attempt; None: CALL_TIMEOUT
    retries: int | None = None  # invoke retries after the first attempt; None: CALL_RETRIES
    compensation_retries: int | None = None  # None: COMPENSATION_RETRIES

    def __post_init__(self) -> None:
        _check_name("step", self.name)
        if (self.kind is StepKind.COMPENSATABLE) != (self.undo is not None):
            raise ValueError(f"step {self.name}: a compensatable step, and only one, has a compensation "
                             "(undo)")
        if not self.receives:
            raise ValueError(f"step {self.name}: receives no input")
        if self.locks and self.kind is not StepKind.COMPENSATABLE:
            raise ValueError(f"step {self.name}: only a compensatable step holds a semantic lock")


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
        """`name@version`, as settings, events and the dashboard write it."""
        return f"{self.name}@{self.version}"

    @property
    def requested(self) -> str:
        """The event a choreographed saga of this name starts with: `SignupRequested`."""
        return f"{self.name.title().replace('_', '')}Requested"

    @property
    def timed_out(self) -> str:
        """The event its entry service publishes when its deadline passes: `SignupTimedOut`."""
        return f"{self.name.title().replace('_', '')}TimedOut"

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

    @property
    def locking_steps(self) -> tuple[Step, ...]:
        """The steps whose rows are semantic locks when a saga runs under one."""
        return tuple(step for step in self.steps if step.locks)


@dataclass(frozen=True)
class Definitions:
    """Every definition the processes can drive, and the one new sagas start under."""

    known: tuple[SagaDefinition, ...]
    default: SagaDefinition
    _by_key: dict[str, SagaDefinition] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_key = {d.key: d for d in self.known}
        if len(by_key) != len(self.known) or self.default.key not in by_key:
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
        return self._by_key.get(f"{name}@{version}")

    def by_key(self, key: str) -> SagaDefinition | None:
        return self._by_key.get(key)

    def __iter__(self) -> Iterator[SagaDefinition]:
        return iter(self.known)

    @property
    def participants(self) -> tuple[str, ...]:
        """Every service any known definition calls."""
        return tuple(dict.fromkeys(p for d in self.known for p in d.participants))


@dataclass(frozen=True)
class Service:
    """One participant service: what makes it differ from the others."""

    name: str  # "a"
    table: str  # "table_a"
    column: str  # the table's value column, e.g. "payment_method"
    field: str  # the saga input field it stores there, e.g. "payment"
    port: int  # its default port on a local run
    unique: bool = False  # a value a live row holds (APPLIED or PENDING) cannot be taken by another saga

    def __post_init__(self) -> None:
        _check_name("service", self.name)
        if self.name in RESERVED:
            raise ValueError(f"service {self.name!r}: the choreography's transports name a destination so")

    @property
    def env_prefix(self) -> str:
        return f"SERVICE_{self.name.upper()}_"

    def url(self, env: Mapping[str, str]) -> str:
        """Where the others reach it: SERVICE_<NAME>_URL, or its default port on this host."""
        return env.get(f"{self.env_prefix}URL", f"http://127.0.0.1:{self.port}")


@dataclass(frozen=True)
class Declaration:
    """A saga, declared: its services, and its definitions with the default new sagas start under."""

    services: tuple[Service, ...]
    definitions: tuple[SagaDefinition, ...]
    default: str  # `name@version`; the setting SAGA_DEFINITION may pick another

    def __post_init__(self) -> None:
        names = [service.name for service in self.services]
        if len(set(names)) != len(names):
            raise ValueError("services must have distinct names")
        for definition in self.definitions:
            for step in definition.steps:
                service = self.service(step.participant)
                if service.field not in step.receives:
                    raise ValueError(f"{definition.key}: step {step.name} must receive {service.field!r}, "
                                     f"the field service {service.name} stores")
        Definitions.of(self.definitions, self.default)

    def service(self, name: str) -> Service:
        found = next((s for s in self.services if s.name == name), None)
        if found is None:
            raise ValueError(f"no service {name!r} is declared")
        return found

    def registry(self, env: Mapping[str, str]) -> Definitions:
        """The definitions, with SAGA_DEFINITION (when set) as the default."""
        return Definitions.of(self.definitions, env.get("SAGA_DEFINITION") or self.default)

    def urls(self, env: Mapping[str, str]) -> dict[str, str]:
        """Each service's URL, from the environment or its default port."""
        return {service.name: service.url(env) for service in self.services}


def load(env: Mapping[str, str]) -> Declaration:
    """The declaration the module named by SAGA_DECLARATION holds (`sagas.signup` by default)."""
    module = importlib.import_module(env.get("SAGA_DECLARATION") or DEFAULT_MODULE)
    declaration = getattr(module, "DECLARATION", None)
    if not isinstance(declaration, Declaration):
        raise ValueError(f"{module.__name__} declares no DECLARATION")
    return declaration
