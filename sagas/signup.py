"""The sign-up saga, declared once: both models run what this file says.

Three services each keep one part of a sign-up in a table of their own. The steps run in
this order; when one fails for good, the ones before it are undone in reverse. The
orchestrator calls them (`/invoke`, `/compensate`); choreographed, each service reacts to the
event before it and publishes its own (`events`), and `choreography/flow.py` derives who
reacts to what from the order below.

A step left without a timeout or retry count takes the settings' defaults (CALL_TIMEOUT,
CALL_RETRIES, COMPENSATION_RETRIES). Change a definition by adding a version: a saga always
finishes under the version it started with, and SAGA_DEFINITION picks the one new sagas use.
Add a step by adding its service and its step here (and the service's few lines: see
docs/adapting.md).
"""

from dataclasses import replace

from common.declaration import Declaration, Events, SagaDefinition, Service, Step, StepKind

SERVICES = (
    # A username held by a live account cannot be taken by another sign-up.
    Service("a", table="table_a", column="username", field="username", port=5001, unique=True),
    Service("b", table="table_b", column="address", field="address", port=5002),
    Service("c", table="table_c", column="payment_method", field="payment", port=5003),
)

# Under a semantic lock (isolation "semantic_lock") the account is PENDING until the sign-up
# completes: another sign-up for its username waits instead of being refused by an account
# that may yet be undone (docs/isolation.md).
ACCOUNT = Step("a", participant="a", receives=("username",), does="create the account",
               undo="remove the account", events=Events.named("Account", "Created"), locks=True)
ADDRESS = Step("b", participant="b", receives=("address",), does="store the address",
               undo="remove the address", events=Events.named("Address", "Stored"))
PAYMENT = Step("c", participant="c", receives=("payment",), does="register the payment method",
               undo="remove the payment method", events=Events.named("Payment", "Registered"))

SIGNUP_V1 = SagaDefinition("signup", 1, description="every step can be undone",
                           steps=(ACCOUNT, ADDRESS, PAYMENT))
"""Invoked in this order; when one fails for good, compensated in reverse from that one."""

SIGNUP_V2 = SagaDefinition("signup", 2, description="the payment is the pivot", steps=(
    ACCOUNT, ADDRESS,
    # A registered card is never taken back: if C fails it is cancelled (a tombstone, so a
    # late commit is refused) and A, B are undone; if C turns out to have committed after
    # all (a late commit before the cancel), the sign-up completes instead.
    replace(PAYMENT, kind=StepKind.PIVOT, undo=None, retries=4),
))
"""The design notes' advice, as a version: the irreversible step last, as the pivot."""

DECLARATION = Declaration(SERVICES, definitions=(SIGNUP_V1, SIGNUP_V2), default=SIGNUP_V1.key)
