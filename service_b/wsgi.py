"""Entry point for gunicorn: `gunicorn service_b.wsgi:app`."""

from service_b import create_app

app = create_app()
