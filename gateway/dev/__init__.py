"""Development servers: embedded PostgreSQL and Redis, the demo seeder."""
