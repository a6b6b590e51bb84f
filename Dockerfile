# Production image: uvicorn behind a non-root user; migrations run before the server starts.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/srv \
    RADAR_DATABASE_URL=sqlite:////srv/var/radar.db

WORKDIR /srv
RUN useradd --create-home --uid 10001 radar

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install . && mkdir -p /srv/var && chown radar:radar /srv/var

USER radar
VOLUME ["/srv/var"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

# Migrations first (one replica at a time on PostgreSQL: they take an advisory lock).
CMD ["sh", "-c", "radar migrate && RADAR_MIGRATE_ON_START=false exec radar serve --host 0.0.0.0 --port 8000"]
