"""Pages of a list route: ``limit`` rows at most (``MAX_PAGE``), and an opaque cursor that continues after
the last row returned (keyset pagination: stable while rows are added, one indexed query a page).

A cursor is the sort key of the last row (``[created_at, id]``, or ``[class_index, id]`` for one job's
circuits) as URL-safe base64 JSON; a cursor that is not one of ours is a 400, like any malformed query parameter.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
from typing import Any

from neurflow.service.errors import ApiError

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != width or not all(
            isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in values):
        raise ApiError("cursor is not a cursor of this list; pass the 'next' value of the previous page as it is")
    return values


def page(conn: sqlite3.Connection, table: str, where: str, params: tuple[Any, ...], order: tuple[str, str],
         limit: int, cursor: str | None, newest_first: bool = False) -> tuple[list[sqlite3.Row], str | None]:
    """One page of ``SELECT * FROM table WHERE where`` ordered by the two columns ``order``; the cursor of the
    next page (None on the last)."""
    first, second = order
    op, direction = ("<", "DESC") if newest_first else (">", "ASC")
    sql = f"SELECT * FROM {table} WHERE {where}"
    args: tuple[Any, ...] = params
    if cursor:
        a, b = decode_cursor(cursor, 2)
        sql += f" AND ({first} {op} ? OR ({first} = ? AND {second} {op} ?))"
        args += (a, a, b)
    sql += f" ORDER BY {first} {direction}, {second} {direction} LIMIT ?"
    rows = conn.execute(sql, args + (limit + 1,)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor([rows[-1][first], rows[-1][second]]) if more else None
