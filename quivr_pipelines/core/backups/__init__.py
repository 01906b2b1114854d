"""Backups of the catalog (PostgreSQL) and, later, the other stores: plain functions, no Dagster."""
