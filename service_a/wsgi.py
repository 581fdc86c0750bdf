"""Entry point for gunicorn: `gunicorn service_a.wsgi:app`."""

from service_a import create_app

app = create_app()
