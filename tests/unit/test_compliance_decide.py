"""The decision function over random consent states (hypothesis), quiet hours and slot spacing."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prasso_messaging.compliance import (
    QuietHours,
    counts_toward_cap,
    decide,
    quiet_until,
)
from prasso_messaging.domain import Outgoing, Recipient, TeamProfile, WhatsAppTemplate
from prasso_messaging.errors import ValidationFailed
from prasso_messaging.pacing.base import Rate, next_slot

PHONE = "+12025550111"  # Washington DC: America/New_York
EMAIL = "kay@example.com"
TEAM_ID = 7
NY = ZoneInfo("America/New_York")
PHONE_CHANNELS = ("sms", "whatsapp")


def outgoing(
    *,
    channel: str,
    kind: str,
    subscribed: bool,
    transactional: bool,
    verified: bool,
    template: bool = False,
) -> Outgoing:
    recipient = Recipient(
        kind,  # type: ignore[arg-type]
        1,
        "Kay",
        None,
        None,
        EMAIL,
        PHONE,
        subscribed,
    )
    team = TeamProfile(TEAM_ID, "Acme", verified, None, None, None, None, None, None)
    chosen = WhatsAppTemplate("HX" + "0" * 32, {"1": "{{FirstName}}"}) if template else None
    return Outgoing(1, channel, None, "Hi", transactional, recipient, team, {}, chosen)


consent_states = st.fixed_dictionaries(
    {
        "channel": st.sampled_from(["sms", "email", "push", "inapp", "whatsapp"]),
        "kind": st.sampled_from(["user", "guest"]),
        "subscribed": st.booleans(),
        "transactional": st.booleans(),
        "verified": st.booleans(),
        "opted_out": st.booleans(),
        "do_not_contact": st.booleans(),
        "has_address": st.booleans(),
        "quiet": st.booleans(),
        "hour": st.integers(0, 23),
        "opted_in": st.booleans(),
        "window_open": st.booleans(),
        "template": st.booleans(),
    }
)

QUIET = QuietHours(time(21, 0), time(8, 0))


def run(state: dict[str, object]) -> tuple[Outgoing, str | None, object]:
    channel = str(state["channel"])
    item = outgoing(
        channel=channel,
        kind=str(state["kind"]),
        subscribed=bool(state["subscribed"]),
        transactional=bool(state["transactional"]),
        verified=bool(state["verified"]),
        template=bool(state["template"]),
    )
    address = (
        {"sms": PHONE, "whatsapp": PHONE, "email": EMAIL}.get(channel, "endpoint")
        if state["has_address"]
        else None
    )
    now = datetime(2026, 6, 15, int(state["hour"]), 30, tzinfo=NY).astimezone(UTC)  # type: ignore[call-overload]
    kinds = ("user",) if channel in ("push", "inapp") else ("user", "guest")
    decision = decide(
        item,
        address=address,
        recipient_kinds=kinds,
        opted_out=bool(state["opted_out"]),
        do_not_contact=bool(state["do_not_contact"]),
        now=now,
        quiet_hours=QUIET if state["quiet"] else None,
        opted_in=bool(state["opted_in"]),
        window_open=bool(state["window_open"]),
    )
    return item, address, decision


@settings(max_examples=400, deadline=None)
@given(consent_states)
def test_nothing_that_must_not_go_out_is_ever_sent(state):
    _, address, decision = run(state)
    blocked = (
        (state["channel"] in ("push", "inapp") and state["kind"] == "guest")
        or address is None
        or state["do_not_contact"]
        or (state["channel"] == "sms" and not state["verified"])
        or (
            state["opted_out"]
            and (state["channel"] in PHONE_CHANNELS or not state["transactional"])
        )
        or (state["channel"] == "whatsapp" and not state["opted_in"])
        or (state["channel"] == "whatsapp" and not state["window_open"] and not state["template"])
        or (state["kind"] == "guest" and not state["subscribed"] and not state["transactional"])
    )
    if blocked:
        assert decision.action == "skip"
        assert decision.error is not None
    else:
        assert decision.action in ("send", "defer")


@settings(max_examples=400, deadline=None)
@given(consent_states)
def test_the_reason_names_the_first_rule_that_blocks(state):
    _, address, decision = run(state)
    if decision.action != "skip":
        return
    channel = state["channel"]
    if channel in ("push", "inapp") and state["kind"] == "guest":
        expected = "channel_unsupported"
    elif address is None:
        expected = "missing_address"
    elif state["do_not_contact"]:
        expected = "do_not_contact"
    elif channel == "sms" and not state["verified"]:
        expected = "team_not_verified"
    elif state["opted_out"] and (channel in PHONE_CHANNELS or not state["transactional"]):
        expected = "opted_out"
    elif channel == "whatsapp" and not state["opted_in"]:
        expected = "not_opted_in"
    elif channel == "whatsapp" and not state["window_open"] and not state["template"]:
        expected = "outside_window"
    else:
        expected = "guest_unsubscribed"
    assert decision.reason == expected
    assert decision.error is not None and decision.error.startswith(expected)


@settings(max_examples=400, deadline=None)
@given(consent_states)
def test_only_non_transactional_sms_or_whatsapp_waits_and_only_for_quiet_hours(state):
    _, _, decision = run(state)
    if decision.action != "defer":
        return
    assert state["channel"] in PHONE_CHANNELS and not state["transactional"] and state["quiet"]
    assert decision.not_before is not None
    local = decision.not_before.astimezone(NY)
    assert local.time() == time(8, 0)
    assert not QUIET.contains(local.time())


@given(st.integers(0, 23), st.integers(0, 59))
def test_quiet_hours_across_midnight(hour, minute):
    now = datetime(2026, 1, 10, hour, minute, tzinfo=NY)
    until = quiet_until(PHONE, now.astimezone(UTC), QUIET)
    inside = hour >= 21 or hour < 8
    assert (until is not None) == inside
    if until is not None:
        assert until > now
        assert until - now <= timedelta(hours=11)
        assert until.astimezone(NY).time() == time(8, 0)


def test_a_number_in_several_zones_waits_until_clear_in_all():
    # 07:30 in New York is 04:30 in Los Angeles: an unknown-zone US toll-free number spans both
    now = datetime(2026, 3, 2, 7, 30, tzinfo=NY).astimezone(UTC)
    until = quiet_until("+18005550100", now, QUIET)
    assert until is not None and until > now
    assert quiet_until("+15555550100", now, QUIET) is None  # no known zone: not held back


def test_quiet_hours_parsing_names_the_field():
    assert QuietHours.from_strings(None, None) is None
    with pytest.raises(ValidationFailed) as bad:
        QuietHours.from_strings("25:00", "08:00")
    assert bad.value.field == "quiet_hours_start"
    with pytest.raises(ValidationFailed) as half:
        QuietHours.from_strings("21:00", None)
    assert half.value.field == "quiet_hours_end"
    with pytest.raises(ValidationFailed):
        QuietHours.from_strings("08:00", "08:00")


@given(st.booleans(), st.booleans(), st.sampled_from(["user", "guest"]))
def test_only_guests_count_and_transactional_bypasses_when_allowed(transactional, bypass, kind):
    item = outgoing(
        channel="sms", kind=kind, subscribed=True, transactional=transactional, verified=True
    )
    counted = counts_toward_cap(item, transactional_bypass=bypass)
    assert counted == (kind == "guest" and not (transactional and bypass))


@given(
    st.integers(1, 8),
    st.floats(0.1, 5),
    st.lists(st.floats(0, 3, allow_nan=False), min_size=1, max_size=60),
    st.floats(0, 4),
)
def test_slots_never_put_more_than_the_limit_in_one_window(limit, interval, arrivals, blocked):
    """Whatever the arrival times and a block, any `interval` window holds at most `limit`."""
    rate = Rate(limit, interval)
    slots: list[float] = []
    for now in sorted(arrivals):
        previous = slots[-limit] if len(slots) >= limit else None  # the ring's occupant
        slot = next_slot(previous, now, blocked, rate)
        assert slot >= max(now, blocked)
        assert not slots or slot >= slots[-1]  # handed out in time order
        slots.append(slot)
    for i in range(len(slots) - limit):
        assert slots[i + limit] - slots[i] >= interval


def test_a_token_without_a_value_skips_after_the_consent_rules():
    team = TeamProfile(TEAM_ID, "Acme", True, None, None, None, None, None, None)
    guest = Recipient("guest", 1, "Kay", None, None, EMAIL, PHONE, True, {"seat": "12A"})
    now = datetime(2026, 6, 15, 12, tzinfo=UTC)

    def decision(body: str, *, data: dict[str, str] | None = None, dnc: bool = False) -> object:
        item = Outgoing(1, "sms", None, body, False, guest, team, data or {})
        return decide(
            item,
            address=PHONE,
            recipient_kinds=("user", "guest"),
            opted_out=False,
            do_not_contact=dnc,
            now=now,
        )

    assert decision("Seat {{seat}} on {{day}}", data={"day": "Friday"}).action == "send"
    missing = decision("Seat {{seat}} on {{day}} at {{hall}}")
    assert (missing.action, missing.error) == (  # type: ignore[attr-defined]
        "skip",
        "missing_field: the guest has no value for {{day}}",
    )
    blocked = decision("{{day}}", dnc=True)
    assert blocked.reason == "do_not_contact"  # type: ignore[attr-defined]
