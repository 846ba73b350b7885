"""Turning a message into what one recipient receives: tokens, email HTML and text, SMS footer.

Tokens are replaced by plain substitution in one pass, never by a template language over user
data, so a value that itself looks like a token (or like template code) stays inert text.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

TOKEN_PATTERN = re.compile(r"\{\{\s*(FirstName|LastName|Name|TeamName)\s*\}\}")
ANONYMOUS_NAME = "there"
DEFAULT_SMS_FOOTER = "Reply STOP to opt out"


@dataclass(frozen=True)
class TokenValues:
    first_name: str | None
    last_name: str | None
    full_name: str | None
    team_name: str

    def lookup(self, token: str) -> str:
        if token == "FirstName":
            return self.first_name or (self.full_name or "").split(" ")[0] or ANONYMOUS_NAME
        if token == "LastName":
            return self.last_name or ""
        if token == "Name":
            joined = " ".join(p for p in (self.first_name, self.last_name) if p)
            return self.full_name or joined or ANONYMOUS_NAME
        return self.team_name


def render_tokens(text: str, values: TokenValues, *, escape: bool = False) -> str:
    """Replace `{{FirstName}}`, `{{LastName}}`, `{{Name}}`, `{{TeamName}}` in one pass."""

    def replace(match: re.Match[str]) -> str:
        value = values.lookup(match.group(1))
        return html.escape(value) if escape else value

    return TOKEN_PATTERN.sub(replace, text)


def text_to_html(text: str) -> str:
    """Escape plain text and keep its paragraphs and line breaks."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in p.splitlines()) + "</p>"
        for p in paragraphs
    )


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


def append_sms_footer(body: str, footer: str | None) -> str:
    """Append the team's compliance footer once (not again if the body already ends with it)."""
    footer = (footer if footer is not None else DEFAULT_SMS_FOOTER).strip()
    if not footer or body.rstrip().endswith(footer):
        return body
    return f"{body.rstrip()}\n{footer}"
