# The Teamu platform in one container: the code location (gRPC server), the Dagster webserver and the daemon.
# Database: the embedded PostgreSQL + pgvector under /data by default, or any server via TEAMU_DATABASE_URL
# (plus TEAMU_DATABASE_PASSWORD for the Dagster instance when that URL carries a password).
# Build and run: see "Docker" in README.md.
FROM python:3.11-slim

# tini is PID 1: it hands `docker stop`'s SIGTERM to docker/entrypoint.sh, which stops Dagster and then Postgres,
# and it reaps the processes Dagster's runs leave behind. Its version is the base image's Debian release's.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# TF_CPP_MIN_LOG_LEVEL 3: without a GPU TensorFlow logs "failed call to cuInit" as an error, then runs on the CPU.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TEAMU_HOME=/data \
    DAGSTER_HOME=/data/dagster \
    TF_CPP_MIN_LOG_LEVEL=3

WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN pip install --no-cache-dir --no-deps -e . \
    && dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project

VOLUME /data
# 3000: the Dagster UI; 8787: the online updater's HTTP endpoint, served when TEAMU_REALTIME_TOKEN is set.
EXPOSE 3000 8787
# The start period covers the first start's initdb and the code location's loading.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 CMD ["docker/healthcheck.sh"]
ENTRYPOINT ["tini", "--", "docker/entrypoint.sh"]
