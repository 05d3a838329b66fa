"""Postgres without Dagster: the embedded server, connections by URL, DDL and SQL functions."""
