"""The API's routers, one module per resource (annotations, sources, health, metrics).

Each module exposes ``router``; :func:`annotation_gateway.api.app.create_app` includes them.
"""
