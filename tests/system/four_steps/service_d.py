"""Service D: a participant like the others, from the same package (`gunicorn ...service_d:app`)."""

from participant.app import create_participant_app

app = create_participant_app("d")
