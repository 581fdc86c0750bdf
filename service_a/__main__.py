"""Run service A alone on the Flask development server: `python -m service_a`."""

from common.declaration import load
from common.settings import environment
from service_a import NAME, create_app

PORT = load(environment()).service(NAME).port
create_app().run(host="127.0.0.1", port=PORT, debug=True, use_reloader=False)
