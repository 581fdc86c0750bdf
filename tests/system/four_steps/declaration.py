"""The sign-up with a fourth step, D (a welcome message), declared as a user adapting the project
would: sagas/signup.py with one more service and one more step. Nothing else is changed for it
but service D's few lines (service_d.py); SAGA_DECLARATION names this module."""

from common.declaration import Declaration, Events, SagaDefinition, Service, Step
from sagas.signup import ACCOUNT, ADDRESS, PAYMENT, SERVICES

WELCOME = Step("d", participant="d", receives=("email",), does="send the welcome message",
               undo="retract the welcome message", events=Events.named("Welcome", "Sent"))

SIGNUP_WITH_WELCOME = SagaDefinition("signup", 1, description="four steps",
                                     steps=(ACCOUNT, ADDRESS, PAYMENT, WELCOME))

DECLARATION = Declaration(
    (*SERVICES, Service("d", table="table_d", column="email", field="email", port=5004)),
    definitions=(SIGNUP_WITH_WELCOME,), default=SIGNUP_WITH_WELCOME.key)
