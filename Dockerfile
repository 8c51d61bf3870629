# EduRise Queue application image: one image for every app service in docker-compose.yml
# (migrate, maintainer, worker, console); the service's `command` picks the role.
#
#   docker build -t edurise-queue .
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... edurise-queue queuectl stats
#
# Configuration comes from the environment only (see db/settings.py); no secrets are baked in.
FROM python:3.11-slim

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
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The project itself (provides the `queuectl` console script). Its dependencies are already
# installed from requirements.txt, hence --no-deps. The source stays in /app (read-only for the
# runtime user; alembic.ini refers to it); the build leftovers are removed.
COPY . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && mkdir -p "$QUEUE_DATA_DIR" /app/jobs \
    && chown edurise:edurise "$QUEUE_DATA_DIR"

# Your own job-type modules: put them in /app/jobs (derived image `COPY myjobs.py /app/jobs/`, or a
# read-only bind mount) and name them in QUEUE_JOB_MODULES, e.g. QUEUE_JOB_MODULES=myjobs.
# /app/jobs is on PYTHONPATH; the installed `queuectl` does not see the working directory.

USER edurise

# Streamlit console (`queuectl console --port 8501`).
EXPOSE 8501

CMD ["queuectl", "--help"]
