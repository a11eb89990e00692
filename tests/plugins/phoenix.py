"""Fixtures for a real Phoenix server (to be written)."""
