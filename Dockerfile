# EduRise Queue application images, one build with two targets; the service's `command` picks the
# role (docker-compose.yml builds each service's target):
#   worker   the migrate, maintainer and worker services and one-off CLI commands: the core
#            dependencies only (no Streamlit, pandas or plotly)
#   console  the console service: the worker image's dependencies plus the `console` extra; it
#            can run every role (the default target: the last stage)
#
#   docker build --target worker -t edurise-queue-worker .
#   docker build -t edurise-queue .                       # = --target console
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... edurise-queue-worker queuectl stats
#
# Dependencies come from uv.lock only: exported per target with their hashes and installed with
# `pip install --require-hashes` (see `make lock`).
# Configuration comes from the environment only (see docs/operations.md, "Configuration"); no
# secrets are baked in.

# The exact, hash-pinned requirement lists of both targets, exported from uv.lock. --locked
# refuses a uv.lock that is stale against pyproject.toml. uv stays in this stage; the images get
# only the two text files.
FROM python:3.11-slim AS requirements
# the same uv as the Makefile's UV_VERSION
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN pip install "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv export --quiet --locked --no-emit-project --extra worker -o /requirements-worker.txt \
    && uv export --quiet --locked --no-emit-project --extra worker --extra console \
       -o /requirements-console.txt

FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    QUEUE_DATA_DIR=/app/var \
    PYTHONPATH=/app/jobs

# Unprivileged runtime user with a fixed uid/gid (stable ownership of the data volume).
RUN groupadd --system --gid 10001 edurise \
    && useradd --system --uid 10001 --gid edurise --create-home --home-dir /home/edurise \
       --shell /usr/sbin/nologin edurise

WORKDIR /app

# Pinned runtime dependencies first, so code changes do not reinstall them.
FROM base AS worker-deps
COPY --from=requirements /requirements-worker.txt /tmp/
RUN pip install --require-hashes -r /tmp/requirements-worker.txt && rm /tmp/requirements-worker.txt

FROM worker-deps AS console-deps
COPY --from=requirements /requirements-console.txt /tmp/
RUN pip install --require-hashes -r /tmp/requirements-console.txt \
    && rm /tmp/requirements-console.txt

# The project itself (provides the `queuectl` console script), the same steps in both targets. Its
# dependencies are already installed from the lock, hence --no-deps. The source stays in /app
# (read-only for the runtime user; alembic.ini refers to it); the build leftovers are removed.
#
# Your own job-type modules: put them in /app/jobs (derived image `COPY myjobs.py /app/jobs/`, or a
# read-only bind mount) and name them in QUEUE_JOB_MODULES, e.g. QUEUE_JOB_MODULES=myjobs.
# /app/jobs is on PYTHONPATH; the installed `queuectl` does not see the working directory.
FROM worker-deps AS worker
COPY . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && mkdir -p "$QUEUE_DATA_DIR" /app/jobs \
    && chown edurise:edurise "$QUEUE_DATA_DIR"
USER edurise
CMD ["queuectl", "--help"]

FROM console-deps AS console
COPY . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && mkdir -p "$QUEUE_DATA_DIR" /app/jobs \
    && chown edurise:edurise "$QUEUE_DATA_DIR"
USER edurise
# Streamlit console (`queuectl console --port 8501`).
EXPOSE 8501
CMD ["queuectl", "--help"]
