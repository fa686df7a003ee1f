"""Page sizes and cursors of the cursor connections (schema/pagination.py builds the types).

A cursor is the opaque, URL-safe base64 of a row's sort key `(created_at, id)`, behind a format
prefix (`v1|`): clients keep cursors across deploys, so a change of their content needs a new
prefix, and an old cursor is then refused as malformed rather than misread.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from gateway.errors import BadUserInput

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
_PREFIX = "v1|"


def check_first(first: int | None) -> int:
    """The page size asked for: 1..100 (default 50), else BAD_USER_INPUT on `first`."""
    if first is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE_SIZE}", field="first")
    return first


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """The opaque cursor of a row whose sort key is (created_at, id)."""
    raw = f"{_PREFIX}{created_at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, field: str = "after") -> tuple[datetime, uuid.UUID] | None:
    """The (created_at, id) a cursor stands for; None for no cursor; BAD_USER_INPUT when it is
    not one of ours (a client must treat cursors as opaque)."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(_PREFIX):
            raise ValueError(raw)
        stamp, _, row_id = raw[len(_PREFIX):].rpartition("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError(stamp)
        return created_at, uuid.UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadUserInput("Malformed cursor", field=field) from None
