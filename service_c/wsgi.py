"""Entry point for gunicorn: `gunicorn service_c.wsgi:app`."""

from service_c import create_app

app = create_app()
