"""Tenants and API keys: SQL storage, the admin operations, and the key cache."""
