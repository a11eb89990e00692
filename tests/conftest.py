"""Suite-wide fixtures. Each real dependency has its own plugin module:

- ``tests.plugins.phoenix``: a real Phoenix server started once per run (never skipped);
- ``tests.plugins.datadog``: the project's Datadog simulator served over real HTTP;
- ``tests.plugins.redis``: a real ``redis-server`` on a free loopback port (never skipped).
"""

pytest_plugins = ["tests.plugins.phoenix", "tests.plugins.datadog", "tests.plugins.redis"]
