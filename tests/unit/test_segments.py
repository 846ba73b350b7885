"""SMS segment counting: hand-checked cases and a property over arbitrary text."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prasso_messaging.rendering import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    count_segments,
    sms_encoding,
    split_sms,
)


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 1),
        ("Reply STOP to opt out", "GSM-7", 21, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("{}[]~|^€\\", "GSM-7", 18, 1),  # the extension table counts double
        ("€" * 80, "GSM-7", 160, 1),
        ("€" * 81, "GSM-7", 162, 2),
        # 152 + 2 + 152 = 306 septets, yet 3 parts: the € may not straddle the 153 boundary
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),
        ("Café à Zürich, ÑÖÜ ñöü @£$¥", "GSM-7", 27, 1),
        ("ç", "UCS-2", 1, 1),  # only the capital Ç is in GSM 03.38
        ("Ж" * 70, "UCS-2", 70, 1),
        ("Ж" * 71, "UCS-2", 71, 2),
        ("Ж" * 134, "UCS-2", 134, 2),
        ("Ж" * 135, "UCS-2", 135, 3),
        ("Party 🎉", "UCS-2", 8, 1),  # an emoji is a surrogate pair: two UTF-16 units
        ("😀" * 35, "UCS-2", 70, 1),
        ("😀" * 36, "UCS-2", 72, 2),
        # 66 + 2 would be 68 > 67: the emoji moves whole to the second part
        ("Ж" * 66 + "😀" + "Ж" * 4, "UCS-2", 72, 2),
        ("Ж" * 66 + "😀" + "Ж" * 66, "UCS-2", 134, 3),
    ],
)
def test_hand_checked_cases(text, encoding, units, segments):
    info = count_segments(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)
    assert info.as_metadata() == {"segments": segments, "encoding": encoding, "units": units}


def test_an_emoji_is_never_split():
    parts = split_sms("Ж" * 66 + "😀" + "Ж" * 4)
    assert parts == ["Ж" * 66, "😀" + "Ж" * 4]
    for part in parts:
        part.encode("utf-16-le")  # a lone surrogate would raise here


def _units(text: str) -> int:
    if sms_encoding(text) == "GSM-7":
        return sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    return len(text.encode("utf-16-le")) // 2


sms_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION)),
        st.sampled_from(["é", "ç", "Ж", "中", "😀", "🎉", "👍", "🏽", "\u200d"]),
    ),
    max_size=700,
)


@given(sms_text)
def test_parts_rebuild_the_text_fit_their_segment_and_are_full(text):
    parts = split_sms(text)
    info = count_segments(text)
    gsm = info.encoding == "GSM-7"
    single, part_size = (160, 153) if gsm else (70, 67)
    assert "".join(parts) == text
    assert info.segments == len(parts)
    assert info.units == _units(text)
    if len(parts) == 1:
        assert info.units <= single
    else:
        assert info.units > single
        for part in parts:
            assert 0 < _units_in(part, gsm) <= part_size
            part.encode("utf-16-le")  # never half a surrogate pair
        for part, following in itertools.pairwise(parts):  # greedy: nothing fits more
            assert _units_in(part, gsm) + _units_in(following[0], gsm) > part_size
        assert info.segments >= -(-info.units // part_size)


def _units_in(text: str, gsm: bool) -> int:
    if gsm:
        return sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    return len(text.encode("utf-16-le")) // 2
