# One image for all four processes; docker-compose.yml picks the command of each.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY gunicorn.conf.py ./
COPY common common
COPY participant participant
COPY service_a service_a
COPY service_b service_b
COPY service_c service_c
COPY sagas sagas
COPY messaging messaging
COPY observer observer
COPY orchestrator orchestrator
COPY choreography choreography
COPY ui ui
RUN useradd --system saga && mkdir -p var && chown saga var
USER saga
