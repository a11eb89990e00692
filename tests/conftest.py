"""Suite-wide fixtures. Each real dependency has its own plugin module:

- ``tests.plugins.phoenix``: a real Phoenix server started once per run (never skipped);
- ``tests.plugins.datadog``: the project's Datadog simulator served over real HTTP.
"""

pytest_plugins = ["tests.plugins.phoenix", "tests.plugins.datadog"]
