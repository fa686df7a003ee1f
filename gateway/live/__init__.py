"""Live dashboards' plumbing, free of GraphQL and HTTP: the fan-out of changes between processes
through Redis pub/sub (`fanout.py`) and each process's hub of subscriptions (`hub.py`).

The GraphQL side (who may follow whom, the figures of each push) is resolvers/live.py and
schema/live.py; the WebSocket side (the handshake, `connection_init`, close codes) is
gateway/http/graphql_view.py. docs/api.md ("Subscriptions") describes what a client sees.
"""
