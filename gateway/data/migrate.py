"""Schema migrations: `sql/migrations/NNNN_name.sql`, applied in order, each exactly once.

Each applied file is recorded in `schema_migrations` with its SHA-256. The whole run holds a
PostgreSQL advisory lock, so two replicas starting at once apply nothing twice: the second waits,
then finds the work done. A file edited after it was applied is refused, since the database no
longer matches what the file says.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from gateway.data.db import SQL_DIR

MIGRATIONS_DIR = SQL_DIR / "migrations"
# An arbitrary constant naming "the migration lock" among the advisory locks of this database.
ADVISORY_LOCK_KEY = 0x6761_7465_7761_79  # "gateway"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migrations on disk and in the database disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return migrations


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is pending; returns the names applied (empty when up to date)."""
    migrations = discover(directory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("select pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            await conn.execute("""
                create table if not exists schema_migrations (
                    version integer primary key,
                    name text not null,
                    checksum text not null,
                    applied_at timestamptz not null default now()
                )""")
            applied = {r["version"]: r for r in
                       await conn.fetch("select version, name, checksum from schema_migrations")}
            done: list[str] = []
            for migration in migrations:
                row = applied.get(migration.version)
                if row is not None:
                    if row["checksum"] != migration.checksum:
                        raise MigrationError(
                            f"{migration.version:04d}_{migration.name}.sql was edited after it "
                            "was applied; add a new migration instead")
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "insert into schema_migrations (version, name, checksum) "
                        "values ($1, $2, $3)",
                        migration.version, migration.name, migration.checksum)
                done.append(f"{migration.version:04d}_{migration.name}")
            return done
        finally:
            await conn.execute("select pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


async def pending(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Names of migrations not yet applied (used by `/ready`-style checks and the CLI)."""
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("select to_regclass('schema_migrations') is not null")
        applied = set() if not exists else {
            r["version"] for r in await conn.fetch("select version from schema_migrations")}
    finally:
        await conn.close()
    return [f"{m.version:04d}_{m.name}" for m in discover(directory) if m.version not in applied]
