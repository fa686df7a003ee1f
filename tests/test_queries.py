from pathlib import Path

import pytest

from gateway.data.db import _INCLUDE, QUERIES, load_queries


def test_includes_are_expanded_once_at_load(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: filters\nand x = 1\n\n"
                                    "-- name: main\nselect 1 where true\n  -- include: filters\n")
    queries = load_queries(tmp_path)
    assert queries["main"] == "select 1 where true\nand x = 1"


@pytest.mark.parametrize(("text", "message"), [
    ("-- name: loop\nselect 1\n-- include: loop\n", "includes itself"),
    ("-- name: main\nselect 1\n-- include: nowhere\n", "not defined"),
])
def test_a_bad_include_is_refused_at_load(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "a.sql").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_queries(tmp_path)


def test_no_shipped_query_keeps_an_include_line() -> None:
    assert [name for name, sql in QUERIES.items() if _INCLUDE.search(sql)] == []
