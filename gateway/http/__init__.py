"""The HTTP edge: the Starlette app, its middleware, the GraphQL view, the response cache and the
CSV export."""
