#!/usr/bin/env bash
# Write the secret files that infra/compose.yaml mounts, each a fresh random value, and a
# self-signed TLS certificate for nginx when none is there. Existing files are kept, so this is safe
# to run again; delete a file to rotate it. The folder is mode 700 (git-ignored); the files are 644
# because compose bind-mounts them as they are and the containers read them as non-root users.
#
#   infra/scripts/make-secrets.sh [SECRETS_DIR] [CERTS_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
secrets="${1:-$here/secrets}"
certs="${2:-$here/nginx/certs}"
umask 077
mkdir -p "$secrets" "$certs"
chmod 700 "$secrets"

random() { head -c 48 /dev/urandom | base64 | tr -d '/+=\n' | head -c "${1:-40}"; }
write() {  # write NAME VALUE: only when the file does not exist yet
    if [[ ! -s "$secrets/$1" ]]; then
        printf '%s' "$2" > "$secrets/$1"
        chmod 644 "$secrets/$1"
        echo "wrote $secrets/$1"
    fi
}

write postgres_password "$(random 32)"
# The application's URL must carry the same password as the PostgreSQL container.
write database_url "postgresql://analytics:$(cat "$secrets/postgres_password")@postgres:5432/analytics"
write redis_password "$(random 32)"
write jwt_secret_key "$(random 64)"
write grafana_admin_password "$(random 24)"

if [[ ! -s "$certs/fullchain.pem" || ! -s "$certs/privkey.pem" ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=${SERVER_NAME:-api.example.com}" \
        -keyout "$certs/privkey.pem" -out "$certs/fullchain.pem" 2>/dev/null
    chmod 644 "$certs/fullchain.pem"
    echo "wrote a self-signed certificate to $certs (replace it with a real one)"
fi
