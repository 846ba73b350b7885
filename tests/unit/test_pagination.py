"""Opaque cursors round-trip, and a tampered cursor is a 422 on `cursor`."""

from __future__ import annotations

import pytest

from prasso_messaging.errors import ValidationFailed
from prasso_messaging.pagination import decode_cursor, encode_cursor, page


def test_cursor_round_trip():
    assert decode_cursor(encode_cursor(12345)) == 12345
    assert decode_cursor(None) is None


@pytest.mark.parametrize("cursor", ["!!", "aWQ6eA", "eDox"])
def test_tampered_cursor(cursor):
    with pytest.raises(ValidationFailed) as caught:
        decode_cursor(cursor)
    assert caught.value.field == "cursor"


def test_page_gives_a_cursor_only_when_more_rows_exist():
    items, cursor = page([1, 2, 3], 2, key=lambda x: x)
    assert items == [1, 2]
    assert decode_cursor(cursor) == 2
    assert page([1, 2], 2, key=lambda x: x) == ([1, 2], None)
