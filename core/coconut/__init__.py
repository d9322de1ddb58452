"""Coconut: its records (models, no I/O), its API client and the API contract (openapi.yaml)."""
