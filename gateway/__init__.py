"""analytics-gateway: the running service."""
