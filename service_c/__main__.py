"""Run service C alone on the Flask development server: `python -m service_c`."""

from service_c import SPEC, create_app

create_app().run(host="127.0.0.1", port=SPEC.port, debug=True, use_reloader=False)
