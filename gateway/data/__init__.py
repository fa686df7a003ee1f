"""Data access: the PostgreSQL pool and named queries, the replica router, migrations, the process's
resources."""
