"""Run the orchestrator alone on the Flask development server: `python -m orchestrator`."""

from orchestrator.app import create_app

create_app().run(host="127.0.0.1", port=5000, debug=True, use_reloader=False)
