"""Turning a message into what one recipient receives: tokens, email HTML and text, SMS footer.

Tokens are replaced by plain substitution in one pass, never by a template language over user
data: a body can never run code or read anything but the recipient's values, and a value that
itself looks like a token (or like template code) stays inert text. A token is a name between
double braces: a built-in (`{{FirstName}}`, `{{LastName}}`, `{{Name}}`, `{{TeamName}}`), or a
custom field of the guest or a key of the send's `data` (`{{seat}}`), the guest's value first.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from prasso_messaging.errors import ValidationFailed

TOKEN_PATTERN = re.compile(r"\{\{([^{}]*)\}\}")  # the text between double braces
TOKEN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
BUILTIN_TOKENS = ("FirstName", "LastName", "Name", "TeamName")
ANONYMOUS_NAME = "there"
DEFAULT_SMS_FOOTER = "Reply STOP to opt out"


@dataclass(frozen=True)
class TokenValues:
    """What one recipient's tokens read: built-ins, then their custom fields over `data`."""

    first_name: str | None
    last_name: str | None
    full_name: str | None
    team_name: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)

    def lookup(self, token: str) -> str | None:
        """The token's text, or None when this recipient has no value for it."""
        if token == "FirstName":
            return self.first_name or (self.full_name or "").split(" ")[0] or ANONYMOUS_NAME
        if token == "LastName":
            return self.last_name or ""
        if token == "Name":
            joined = " ".join(p for p in (self.first_name, self.last_name) if p)
            return self.full_name or joined or ANONYMOUS_NAME
        if token == "TeamName":
            return self.team_name
        for source in (self.fields, self.data):
            text = value_text(source.get(token))
            if text is not None:
                return text
        return None


def value_text(value: Any) -> str | None:
    """A field or data value as text; None (absent, null, blank) counts as no value."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if text.strip() else None


def token_names(texts: Mapping[str, str | None]) -> list[str]:
    """The distinct token names of the texts (keyed by their field), in order of first use.

    Raises ValidationFailed naming the field and a token that is not a name (`{{ 7*7 }}`,
    `{{ ''.__class__ }}`): nothing between braces is ever evaluated, so such a token could only
    be sent as typed.
    """
    names: dict[str, None] = {}
    for field_name, text in texts.items():
        for raw in _template(text or "")[1::2]:
            name = raw.strip()
            if not TOKEN_NAME.fullmatch(name):
                raise ValidationFailed(
                    field_name,
                    f"{{{{{raw}}}}} is not a token: a token is a name of letters, digits and _"
                    " (a built-in, a guest's custom field or a key of the send's data)",
                )
            names[name] = None
    return list(names)


def missing_tokens(texts: Iterable[str | None], values: TokenValues) -> list[str]:
    """The tokens of the texts this recipient has no value for (absent, null or blank)."""
    missing: dict[str, None] = {}
    for text in texts:
        parts = _template(text or "")
        for raw in parts[1::2]:
            if values.lookup(raw.strip()) is None:
                missing[raw.strip()] = None
    return list(missing)


HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


def header_safe(value: str) -> str:
    """A value safe for one header line: CR, LF, NUL and other controls become one space.

    Subjects are checked when a message is created, but a token value (a guest's name) is only
    known at send time, so the rendered header is cleaned again here.
    """
    return HEADER_UNSAFE.sub(" ", value).strip()


def render_tokens(text: str, values: TokenValues, *, escape: bool = False) -> str:
    """Replace every token in one pass; a token without a value stays as typed (the worker
    skips such a recipient `missing_field` before anything is rendered for it)."""
    parts = _template(text)
    if len(parts) == 1:
        return text
    rendered = list(parts)
    for index in range(1, len(rendered), 2):
        value = values.lookup(rendered[index].strip())
        if value is None:
            value = "{{" + rendered[index] + "}}"
        rendered[index] = html.escape(value) if escape else value
    return "".join(rendered)


@lru_cache(maxsize=256)
def _template(text: str) -> tuple[str, ...]:
    """Literal text and token texts, alternating: a message is parsed once, not per recipient."""
    return tuple(TOKEN_PATTERN.split(text))


def text_to_html(text: str) -> str:
    """Escape plain text and keep its paragraphs and line breaks."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in p.splitlines()) + "</p>"
        for p in paragraphs
    )


def email_footer_html(*, sender: str, unsubscribe_url: str | None) -> str:
    """Who sent the email and, for non-transactional mail, the unsubscribe link."""
    parts = [f"Sent by {html.escape(sender)}."]
    if unsubscribe_url:
        parts.append(
            "Don&#39;t want these emails? "
            f'<a href="{html.escape(unsubscribe_url, quote=True)}" style="color:#52606d;">Unsubscribe</a>.'
        )
    return " ".join(parts)


def email_footer_text(*, sender: str, unsubscribe_url: str | None) -> str:
    lines = ["-- ", f"Sent by {sender}."]  # "-- " is the signature delimiter mail clients know
    if unsubscribe_url:
        lines.append(f"Unsubscribe: {unsubscribe_url}")
    return "\n".join(lines)


def email_html(*, subject: str, body_html: str, team_name: str, footer_html: str = "") -> str:
    """The clean, styled layout every email body is rendered into."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(subject)}</title>
</head>
<body style="margin:0;padding:0;background:#f4f5f7;">
<table role="presentation" width="100%" cellspacing="0" cellpadding="0" style="background:#f4f5f7;">
<tr><td align="center" style="padding:24px 12px;">
<table role="presentation" width="100%" cellspacing="0" cellpadding="0"
 style="max-width:600px;background:#ffffff;border-radius:8px;font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;color:#1f2933;">
<tr><td style="padding:20px 28px;border-bottom:1px solid #e4e7eb;font-size:14px;color:#52606d;">{html.escape(team_name)}</td></tr>
<tr><td style="padding:24px 28px;font-size:16px;line-height:1.5;">
{body_html}
</td></tr>
<tr><td style="padding:16px 28px;border-top:1px solid #e4e7eb;font-size:12px;color:#7b8794;">{footer_html}</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
"""


def sms_footer(*, business_name: str | None, disclaimer: str | None, stop_line: str | None) -> str:
    """The team's SMS compliance footer, on one line: who is texting (the business name), the
    disclaimer (e.g. "Msg & data rates may apply."), and how to stop (the team's `footer_text`,
    default "Reply STOP to opt out"). The name is left out when the other parts already say it.

    >>> sms_footer(business_name="Acme", disclaimer="Msg rates may apply", stop_line=None)
    'Acme: Msg rates may apply. Reply STOP to opt out'
    """
    stop = (stop_line if stop_line is not None else DEFAULT_SMS_FOOTER).strip()
    note = (disclaimer or "").strip()
    if note and note[-1] not in ".!?":
        note += "."
    text = " ".join(part for part in (note, stop) if part)
    name = (business_name or "").strip()
    if name and name.lower() not in text.lower():
        return f"{name}: {text}" if text else name
    return text


def append_sms_footer(body: str, footer: str | None) -> str:
    """Append the team's compliance footer once (not again if the body already ends with it)."""
    footer = (footer if footer is not None else DEFAULT_SMS_FOOTER).strip()
    if not footer or body.rstrip().endswith(footer):
        return body
    return f"{body.rstrip()}\n{footer}"


# --- SMS segments --------------------------------------------------------------------------------

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")  # sent as ESC + char: two septets each
GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION
GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

SmsEncoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True)
class SegmentInfo:
    """How an SMS body travels: its encoding, length in units (septets or UTF-16 code units)
    and the number of segments a carrier bills."""

    encoding: SmsEncoding
    units: int
    segments: int
    characters: int

    def as_metadata(self) -> dict[str, object]:
        return {"segments": self.segments, "encoding": self.encoding, "units": self.units}


def sms_encoding(text: str) -> SmsEncoding:
    """GSM-7 when every character is in the GSM 03.38 basic or extension table, else UCS-2."""
    if set(text) <= GSM7_ALL:
        return "GSM-7"
    return "UCS-2"


def _unit_width(char: str, encoding: SmsEncoding) -> int:
    if encoding == "GSM-7":
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1  # a surrogate pair in UTF-16


def split_sms(text: str) -> list[str]:
    """The parts a concatenated SMS is sent as.

    A part never ends between the two septets of an extension character or between the two
    halves of a surrogate pair (an emoji): such a character moves whole to the next part.
    """
    encoding = sms_encoding(text)
    widths = [_unit_width(c, encoding) for c in text]
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_PART)
    if sum(widths) <= single:
        return [text]
    parts: list[str] = []
    start, used = 0, 0
    for index, width in enumerate(widths):
        if used + width > part:
            parts.append(text[start:index])
            start, used = index, 0
        used += width
    parts.append(text[start:])
    return parts


def count_segments(text: str) -> SegmentInfo:
    """Encoding, length and segment count of an SMS body (an empty body still costs one).

    One pass over the distinct characters; the part-by-part split runs only in the rare case
    where a two-unit character (a GSM-7 escape, a UTF-16 surrogate pair) could straddle a part.
    """
    distinct = set(text)
    if distinct <= GSM7_ALL:
        encoding: SmsEncoding = "GSM-7"
        wide = distinct & GSM7_EXTENSION
        single, part = GSM7_SINGLE, GSM7_PART
    else:
        encoding = "UCS-2"
        wide = {c for c in distinct if ord(c) > 0xFFFF}
        single, part = UCS2_SINGLE, UCS2_PART
    units = len(text) + sum(text.count(c) for c in wide)
    if units <= single:
        segments = 1
    elif not wide:
        segments = math.ceil(units / part)
    else:
        segments = len(split_sms(text))
    return SegmentInfo(encoding, units, segments, len(text))
