"""Operations: settings, logs, metrics, Sentry, the circuit breaker."""
