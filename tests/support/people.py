"""Who signs up: a sign-up's input, fresh for every saga, and which service keeps which field."""

from __future__ import annotations

import uuid

from scripts.stack import SIGNUP

FIELDS = {service.name: service.field for service in SIGNUP.services}  # service -> the field it keeps


def fresh_user(*, email: bool = False) -> dict[str, str]:
    """A sign-up's input under a fresh tag. A refuses a username that a live account of another
    saga holds, so no two sagas share one unless a test means them to."""
    tag = uuid.uuid4().hex[:10]
    user = {"username": f"user-{tag}", "address": f"{tag} Main Street", "payment": f"card-{tag}"}
    if email:  # the four-step saga's fourth field
        user["email"] = f"{tag}@example.com"
    return user


def fresh_value(service: str) -> str:
    """A fresh value for `service`'s own field, for its /invoke called directly."""
    return fresh_user()[FIELDS[service]]
