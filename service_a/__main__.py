"""Run service A alone on the Flask development server: `python -m service_a`."""

from service_a import SPEC, create_app

create_app().run(host="127.0.0.1", port=SPEC.port, debug=True, use_reloader=False)
