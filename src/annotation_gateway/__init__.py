"""annotation-gateway: one federated REST API over Phoenix and Datadog LLM Observability annotations."""

__version__ = "0.1.0"
