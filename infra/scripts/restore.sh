#!/usr/bin/env bash
# Restore a backup made by backup.sh: the deployment guide's recovery procedure.
#
#   restore.sh FILE.sql.gz | latest | s3://bucket/path/db_YYYYmmdd_HHMMSS.sql.gz  [--clean]
#
# `latest` is the newest db_*.sql.gz in BACKUP_DIR (default /backups/analytics); an s3:// source is
# downloaded with the aws CLI first. The target database (DATABASE_URL or DATABASE_URL_FILE) must
# be empty, unless --clean is given: then its `public` schema is dropped and recreated first. The
# restore runs in one transaction with ON_ERROR_STOP, so a failure leaves the database as it was.
# Stop the API and worker first (or point them elsewhere): a restore is not an online operation.
# PG_BIN: folder of psql (default: PATH).
set -euo pipefail

die() { echo "restore.sh: $*" >&2; exit 1; }

source_arg="${1:-}"
clean="no"
[[ "${2:-}" == "--clean" || "${1:-}" == "--clean" ]] && clean="yes"
[[ "$source_arg" == "--clean" ]] && source_arg="${2:-}"
[[ -n "$source_arg" ]] || die "usage: restore.sh FILE.sql.gz|latest|s3://... [--clean]"

url="${DATABASE_URL:-}"
if [[ -z "$url" && -n "${DATABASE_URL_FILE:-}" ]]; then
    url="$(<"$DATABASE_URL_FILE")" || die "cannot read DATABASE_URL_FILE=$DATABASE_URL_FILE"
fi
[[ -n "$url" ]] || die "set DATABASE_URL or DATABASE_URL_FILE"
url="$(printf '%s' "$url" | sed -E 's#^postgres(ql)?\+[a-z0-9]+://#postgresql://#')"
psql=("${PG_BIN:+$PG_BIN/}psql" --no-psqlrc --quiet --dbname="$url" -v ON_ERROR_STOP=1)

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
case "$source_arg" in
    latest)
        backup_dir="${BACKUP_DIR:-/backups/analytics}"
        file="$(find "$backup_dir" -maxdepth 1 -type f -name 'db_*.sql.gz' | sort | tail -n 1)"
        [[ -n "$file" ]] || die "no db_*.sql.gz in $backup_dir"
        ;;
    s3://*)
        command -v aws >/dev/null || die "an s3:// source needs the aws CLI"
        file="$workdir/$(basename "$source_arg")"
        aws s3 cp --only-show-errors "$source_arg" "$file"
        ;;
    *)
        file="$source_arg"
        ;;
esac
[[ -f "$file" ]] || die "no such backup: $file"
gzip -t "$file" || die "$file is not a valid gzip file (truncated upload?)"

tables="$("${psql[@]}" -At -c "select count(*) from pg_tables where schemaname = 'public'")"
if [[ "$tables" != "0" ]]; then
    [[ "$clean" == "yes" ]] || die "the target database has $tables tables; restore into an empty database, or pass --clean to drop them first"
    "${psql[@]}" -c 'drop schema public cascade' -c 'create schema public'
fi

gunzip -c "$file" | "${psql[@]}" --single-transaction >/dev/null
echo "restored $file"
"${psql[@]}" -At -c "select count(*) from tasks" | sed 's/^/tasks: /'
