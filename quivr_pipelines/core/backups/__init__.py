"""Backups: catalog, vectors, configuration; encryption and retention."""
