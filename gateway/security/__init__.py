"""Who is asking and how often: access tokens, refresh tokens, passwords, rate limits."""
