"""The query service (FastAPI): search and ask over the KBs the pipelines fill. Imports core/,
never dagster. `quivr-pipelines serve` runs it; `create_app()` is the ASGI factory."""
