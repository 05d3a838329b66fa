"""Make a server ready for the platform: databases, pgvector, the schemas this project owns."""

from __future__ import annotations

from teamu_assets.db import schema, server
from teamu_assets.db.connection import ensure_database, ensure_pgvector, with_database

# Applied in this order on every start; each file is idempotent.
OWNED_SCHEMAS = ("raw_supabase", "raw_mixpanel", "ml")


def prepare_app_database(app_url: str) -> str:
    """Ensure pgvector (>= 0.8) and the owned schemas in the app database; return the pgvector version."""
    version = ensure_pgvector(app_url)
    schema.apply(app_url, *[name for name in OWNED_SCHEMAS if name in schema.available()])
    return version


def prepare_server(server_url: str, app_database: str = server.APP_DATABASE) -> str:
    """Create the app and Dagster databases on a server we own (the embedded one); return the app URL."""
    maintenance_url = with_database(server_url, "postgres")
    ensure_database(maintenance_url, app_database)
    ensure_database(maintenance_url, server.DAGSTER_DATABASE)
    return with_database(server_url, app_database)
