"""The sign-up saga: its steps in order, each with the compensation that undoes it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One local transaction of the saga, run by one participant service."""

    name: str  # the participant that runs it: "a", "b" or "c"
    action: str  # what its /invoke does
    compensation: str  # what its /compensate does


SIGNUP_STEPS: tuple[Step, ...] = (
    Step("a", action="create the account (username)", compensation="remove the account"),
    Step("b", action="store the address", compensation="remove the address"),
    Step("c", action="register the payment method", compensation="remove the payment method"),
)
"""Invoked in this order; when one fails for good, compensated in reverse from that one."""

STEP_NAMES = tuple(step.name for step in SIGNUP_STEPS)
