"""Webhooks (SPEC §10): batches of changes POSTed to configured URLs, signed the Standard Webhooks way.

Contract: :mod:`.config` is the ``[[webhooks]]`` settings (imported by the settings module, so
this package imports nothing at its top: the delivery side needs the federation, which needs the
settings); :mod:`.signing` signs; :mod:`.store` keeps each webhook's delivery state in SQLite;
:mod:`.deliver` runs the delivery loops and answers their status.
"""
