# The Teamu platform in one container: the code location (gRPC server), the Dagster webserver and the daemon.
# Database: the embedded PostgreSQL + pgvector under /data by default, or any server via TEAMU_DATABASE_URL
# (plus TEAMU_DATABASE_PASSWORD for the Dagster instance when that URL carries a password).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TEAMU_HOME=/data \
    DAGSTER_HOME=/data/dagster \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN pip install --no-cache-dir --no-deps -e . \
    && dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project

VOLUME /data
EXPOSE 3000
ENTRYPOINT ["docker/entrypoint.sh"]
