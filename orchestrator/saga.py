"""The sign-up saga: its steps in order, what each receives, how it is undone, its policies.

This is the whole saga the engine runs. A step left without a timeout or retry count
takes the settings' defaults (CALL_TIMEOUT, CALL_RETRIES, COMPENSATION_RETRIES).
Change a definition by adding a version: a saga always finishes under the version it
started with (the saga log records it), and SAGA_DEFINITION picks the one new sagas use.
"""

from orchestrator.definition import SagaDefinition, Step, StepKind

SIGNUP_V1 = SagaDefinition("signup", 1, description="every step can be undone", steps=(
    Step("a", participant="a", receives=("username",),
         action="create the account", compensation="remove the account"),
    Step("b", participant="b", receives=("address",),
         action="store the address", compensation="remove the address"),
    Step("c", participant="c", receives=("payment",),
         action="register the payment method", compensation="remove the payment method"),
))
"""Invoked in this order; when one fails for good, compensated in reverse from that one."""

SIGNUP_V2 = SagaDefinition("signup", 2, description="the payment is the pivot", steps=(
    *SIGNUP_V1.steps[:2],
    # A registered card is never taken back: if C fails it is cancelled (a tombstone, so a
    # late commit is refused) and A, B are undone; if C turns out to have committed after
    # all (a late commit before the cancel), the sign-up completes instead.
    Step("c", participant="c", receives=("payment",), kind=StepKind.PIVOT,
         action="register the payment method", retries=4),
))
"""The design notes' advice, as a version: the irreversible step last, as the pivot."""

DEFINITIONS = (SIGNUP_V1, SIGNUP_V2)
DEFAULT_DEFINITION = SIGNUP_V1.key
