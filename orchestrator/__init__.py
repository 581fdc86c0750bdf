"""The saga orchestrator: drives sagas over the participant services and serves the dashboard.

`orchestrator.app.create_app` builds the process; `sagas/signup.py` is the saga it runs.
"""
