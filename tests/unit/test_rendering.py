"""Tokens, escaping and headers: values are substituted as inert text, once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prasso_messaging.errors import ValidationFailed
from prasso_messaging.rendering import (
    TokenValues,
    append_sms_footer,
    email_footer_html,
    header_safe,
    missing_tokens,
    render_tokens,
    sms_footer,
    text_to_html,
    token_names,
    value_text,
)

ADA = TokenValues("Ada", "Lovelace", None, "Acme")
ANONYMOUS = TokenValues(None, None, None, "Acme")


def test_tokens_and_the_friendly_fallback():
    text = "{{FirstName}} {{LastName}} / {{Name}} @ {{TeamName}} {{ FirstName }} {{Unknown}}"
    assert render_tokens(text, ADA) == "Ada Lovelace / Ada Lovelace @ Acme Ada {{Unknown}}"
    assert render_tokens("Hi {{FirstName}}, {{Name}}!", ANONYMOUS) == "Hi there, there!"
    user = TokenValues(None, None, "Grace Hopper", "Acme")
    assert render_tokens("{{FirstName}}|{{Name}}", user) == "Grace|Grace Hopper"


def test_a_value_that_looks_like_a_token_or_template_stays_inert():
    sneaky = TokenValues("{{TeamName}}", "{% raw %}{{ 7*7 }}", None, "Acme")
    rendered = render_tokens("{{FirstName}} {{LastName}}", sneaky)
    assert rendered == "{{TeamName}} {% raw %}{{ 7*7 }}"


def test_values_are_escaped_in_html():
    evil = TokenValues("<script>alert(1)</script>", None, None, "A&B")
    html = text_to_html(render_tokens("Hi {{FirstName}} from {{TeamName}}\nbye", evil))
    assert html == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt; from A&amp;B<br>\nbye</p>"
    assert render_tokens("{{TeamName}}", evil, escape=True) == "A&amp;B"


def test_the_unsubscribe_link_is_attribute_escaped():
    html = email_footer_html(sender='A"B', unsubscribe_url='https://x.test/u/a"onmouseover="x')
    assert 'href="https://x.test/u/a&quot;onmouseover=&quot;x"' in html
    assert "Sent by A&quot;B." in html


@given(st.text())
def test_header_values_never_carry_a_line_break(value):
    cleaned = header_safe(value)
    assert not any(c in cleaned for c in "\r\n\x00")


def test_header_injection_is_flattened():
    assert header_safe("Hi\r\nBcc: x@evil.test\x00") == "Hi Bcc: x@evil.test"


def test_the_sms_footer_is_appended_once():
    assert append_sms_footer("Sale", None) == "Sale\nReply STOP to opt out"
    assert append_sms_footer("Sale\nReply STOP to opt out", None) == "Sale\nReply STOP to opt out"
    assert append_sms_footer("Sale", "Acme: STOP to end") == "Sale\nAcme: STOP to end"
    assert append_sms_footer("Sale", "") == "Sale"


def test_custom_tokens_read_the_guests_fields_before_the_sends_data():
    values = TokenValues(
        "Ada", None, None, "Acme", fields={"seat": "12A", "day": ""}, data={"day": "May 1"}
    )
    text = "{{FirstName}}: {{seat}} on {{ day }}, {{hall}}"
    assert render_tokens(text, values) == "Ada: 12A on May 1, {{hall}}"  # no value: as typed
    assert missing_tokens([text, None, "{{hall}} {{seat}}"], values) == ["hall"]
    assert missing_tokens(["{{FirstName}} {{LastName}}"], ANONYMOUS) == []  # built-ins: never


def test_values_as_text():
    assert [value_text(v) for v in ("x", 12, 1.5, True, False, None, " ", {}, [])] == [
        "x", "12", "1.5", "true", "false", None, None, None, None,
    ]  # fmt: skip


def test_token_names_are_names_and_anything_else_is_refused_naming_its_field():
    assert token_names({"subject": "{{seat}} {{ FirstName }}", "body": "{{seat}} {{row_2}}"}) == [
        "seat",
        "FirstName",
        "row_2",
    ]
    for text in ("{{ ''.__class__ }}", "{{ 7*7 }}", "{{__class__}}", "{{ a.b }}", "{{}}"):
        with pytest.raises(ValidationFailed) as refused:
            token_names({"subject": None, "body": f"Hi {text}"})
        assert refused.value.field == "body" and "is not a token" in refused.value.message
    assert token_names({"body": "{ {x} } {{ {x} }} {{x}"}) == []  # not tokens: plain text


def test_rendering_reads_nothing_but_the_given_values():
    """Nothing between braces is evaluated or looked up as an attribute: `settings`, dunder
    names and expressions are only ever keys of the recipient's fields or the send's data."""
    text = "{{ settings }} {{ ''.__class__ }} {{__class__}} {{ config }} {{ self }}"
    assert render_tokens(text, ADA) == text
    assert missing_tokens([text], ADA) == [
        "settings",
        "''.__class__",
        "__class__",
        "config",
        "self",
    ]
    given = TokenValues(None, None, None, "Acme", data={"settings": "{{TeamName}}"})
    assert render_tokens("{{settings}}", given) == "{{TeamName}}"  # a value stays inert


def test_the_sms_footer_is_business_name_disclaimer_and_stop_line():
    def footer(name: str | None, note: str | None, stop: str | None = None) -> str:
        return sms_footer(business_name=name, disclaimer=note, stop_line=stop)

    assert footer(None, None) == "Reply STOP to opt out"
    assert footer("Acme", None) == "Acme: Reply STOP to opt out"
    assert footer("Acme", "Msg & data rates may apply.") == (
        "Acme: Msg & data rates may apply. Reply STOP to opt out"
    )
    assert footer("Acme", "Msg rates may apply", None) == (
        "Acme: Msg rates may apply. Reply STOP to opt out"
    )
    assert footer(None, "  4 msgs/mo!  ", "Text STOP to end") == "4 msgs/mo! Text STOP to end"
    assert footer("Acme", None, "Acme: STOP to end") == "Acme: STOP to end"  # named once
    assert footer("acme", "Acme alerts.", None) == "Acme alerts. Reply STOP to opt out"
    assert footer("Acme", None, "") == "Acme"
    assert footer(None, None, "") == ""
