#!/usr/bin/env bash
# Back up the analytics database: `pg_dump | gzip` into BACKUP_DIR, keep RETENTION_DAYS days of
# backups, and upload to S3 when BACKUP_S3_URI is set. The deployment guide's backup strategy;
# run daily (analytics-backup.timer, or cron `0 3 * * * /opt/analytics/infra/scripts/backup.sh`).
#
# Environment:
#   DATABASE_URL or DATABASE_URL_FILE   the database (postgresql:// or postgresql+asyncpg://)
#   BACKUP_DIR       where dumps go (default /backups/analytics)
#   RETENTION_DAYS   local dumps older than this are deleted (default 30)
#   BACKUP_S3_URI    e.g. s3://backups/analytics/ : upload each dump there with the aws CLI
#   PG_BIN           folder of pg_dump (default: PATH); must be at least the server's version
#
# Prints the path of the new dump on stdout. A failed dump leaves no file behind (it is written to
# a .partial name and renamed only when pg_dump and gzip both succeeded).
set -euo pipefail

die() { echo "backup.sh: $*" >&2; exit 1; }

url="${DATABASE_URL:-}"
if [[ -z "$url" && -n "${DATABASE_URL_FILE:-}" ]]; then
    url="$(<"$DATABASE_URL_FILE")" || die "cannot read DATABASE_URL_FILE=$DATABASE_URL_FILE"
fi
[[ -n "$url" ]] || die "set DATABASE_URL or DATABASE_URL_FILE"
# libpq does not know SQLAlchemy's driver suffix.
url="$(printf '%s' "$url" | sed -E 's#^postgres(ql)?\+[a-z0-9]+://#postgresql://#')"

backup_dir="${BACKUP_DIR:-/backups/analytics}"
retention_days="${RETENTION_DAYS:-30}"
[[ "$retention_days" =~ ^[0-9]+$ ]] || die "RETENTION_DAYS must be a whole number"
pg_dump="${PG_BIN:+$PG_BIN/}pg_dump"

mkdir -p "$backup_dir"
umask 077
stamp="$(date -u +%Y%m%d_%H%M%S)"
target="$backup_dir/db_$stamp.sql.gz"
partial="$target.partial"
trap 'rm -f "$partial"' EXIT

# Plain SQL without owners or grants, so that it restores into any role's database (psql).
"$pg_dump" --dbname="$url" --format=plain --no-owner --no-privileges --quote-all-identifiers \
    | gzip -6 > "$partial"
gzip -t "$partial"
mv "$partial" "$target"
trap - EXIT

if [[ -n "${BACKUP_S3_URI:-}" ]]; then
    command -v aws >/dev/null || die "BACKUP_S3_URI is set but the aws CLI is not installed"
    aws s3 cp --only-show-errors "$target" "${BACKUP_S3_URI%/}/$(basename "$target")"
fi

# Retention: only our own dumps, never anything else in the folder.
find "$backup_dir" -maxdepth 1 -type f -name 'db_*.sql.gz' -mtime "+$retention_days" -delete

echo "$target"
