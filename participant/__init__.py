"""The participant logic services A, B and C share; each service names only what differs."""

from participant.app import ServiceSpec, create_participant_app

__all__ = ["ServiceSpec", "create_participant_app"]
