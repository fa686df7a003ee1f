"""Strawberry schema extensions: error shaping, query limits, input checks, the cache report."""
