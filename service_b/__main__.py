"""Run service B alone on the Flask development server: `python -m service_b`."""

from service_b import SPEC, create_app

create_app().run(host="127.0.0.1", port=SPEC.port, debug=True, use_reloader=False)
