"""Fixtures for the Datadog simulator (to be written)."""
