"""The gateway's REST API (SPEC §3): ``create_app`` builds the FastAPI application.

Layout: :mod:`.app` (factory and lifespan), :mod:`.routes` (one router per resource),
:mod:`.auth` (bearer keys), :mod:`.problems` (RFC 9457 errors), :mod:`.timing` (Server-Timing
and request metrics), :mod:`.limits` (body size), :mod:`.schemas` (models and the hot-path
serializer).
"""
