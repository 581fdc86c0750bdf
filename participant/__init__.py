"""The participant logic services A, B and C share; each service names only what differs
(`participant.spec.ServiceSpec`) and builds its app with `participant.app.create_participant_app`."""
