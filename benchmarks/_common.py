"""Shared by the benchmarks."""

import os


def drop_schema() -> None:
    """Leave an external catalog database as it was (the embedded one goes with the folder)."""
    if os.environ.get("QUIVR_DATABASE_URL"):
        import psycopg

        with psycopg.connect(os.environ["QUIVR_DATABASE_URL"], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{os.environ["QUIVR_DATABASE_SCHEMA"]}" CASCADE')
