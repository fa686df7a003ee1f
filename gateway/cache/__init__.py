"""The Redis side: clients and their breaker, and the cache of field results."""
