"""One decision per delivery, made by the worker just before the send: send, wait, or skip and why.

State can change between queueing and sending (an opt-out, a do-not-contact entry, a revoked
verification), so the check runs again here however the delivery was queued. `decide` is a pure
function over what the claim loaded with each delivery (its opt-out and do-not-contact flags
included), which is what lets it be property-tested. The per-guest cap (`caps.py`) and provider
pacing (`pacing/`) need atomic reservations shared by every worker, so they are taken around it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones

from prasso_messaging.domain import Outgoing
from prasso_messaging.errors import Reason, ValidationFailed

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Decision:
    """`send`; `defer` until `not_before` (the job is released, never dropped); or `skip`."""

    action: Literal["send", "defer", "skip"]
    reason: Reason | None = None
    detail: str = ""
    not_before: datetime | None = None

    @property
    def error(self) -> str | None:
        if self.reason is None:
            return None
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


SEND = Decision("send")
CANCELLED = Decision("skip", Reason.CANCELLED, "the message was cancelled")
"""A delivery of a cancelled message: skipped by the cancel, or by a worker that claims it."""


def skip(reason: Reason, detail: str = "") -> Decision:
    return Decision("skip", reason, detail)


# --- quiet hours ---------------------------------------------------------------------------------


def parse_clock(value: str, *, field: str) -> time:
    """ "HH:MM" (24-hour) → time; anything else is a ValidationFailed naming `field`."""
    match = CLOCK.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValidationFailed(field, "must be a 24-hour time HH:MM, e.g. 21:00")
    return time(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class QuietHours:
    """A daily window in the recipient's local time, e.g. 21:00-08:00 (may cross midnight)."""

    start: time
    end: time

    @classmethod
    def from_strings(cls, start: str | None, end: str | None) -> QuietHours | None:
        if start is None and end is None:
            return None
        if start is None or end is None:
            missing = "quiet_hours_start" if start is None else "quiet_hours_end"
            raise ValidationFailed(missing, "quiet hours need both a start and an end")
        parsed = cls(
            parse_clock(start, field="quiet_hours_start"),
            parse_clock(end, field="quiet_hours_end"),
        )
        if parsed.start == parsed.end:
            raise ValidationFailed("quiet_hours_end", "must differ from quiet_hours_start")
        return parsed

    def contains(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def ends_after(self, local: datetime) -> datetime:
        """The first end of the window after `local` (aware, in its zone)."""
        end = datetime.combine(local.date(), self.end, tzinfo=local.tzinfo)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=local.tzinfo)
        return end


@lru_cache(maxsize=4096)
def recipient_time_zones(phone: str) -> tuple[ZoneInfo, ...]:
    """The time zones a number may ring in (a region can span several), known ones only."""
    try:
        number = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException:
        return ()
    zones: list[ZoneInfo] = []
    for name in phone_timezones.time_zones_for_number(number):
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            continue  # "Etc/Unknown" and names this system's tz database lacks
    return tuple(zones)


def quiet_until(phone: str, now: datetime, quiet: QuietHours) -> datetime | None:
    """When a message to `phone` may go out, or None if `now` is outside quiet hours everywhere.

    A number spanning several zones must be outside the window in all of them; the candidates
    are `now` and each zone's next window end. If no candidate is clear everywhere (a number
    spanning most of the globe), the one clear in the most zones wins.
    """
    zones = recipient_time_zones(phone)
    if not zones:
        return None

    def clear_in(at: datetime) -> int:
        return sum(1 for z in zones if not quiet.contains(at.astimezone(z).time()))

    if clear_in(now) == len(zones):
        return None
    candidates = sorted({quiet.ends_after(now.astimezone(z)).astimezone(now.tzinfo) for z in zones})
    best = max(candidates, key=lambda at: (clear_in(at), -at.timestamp()))
    return best


PHONE_CHANNELS = ("sms", "whatsapp")
"""Channels that reach a phone: E.164 addresses, quiet hours, and an opt-out that blocks
everything."""


def _address_is_valid(channel: str, address: str) -> bool:
    if channel in PHONE_CHANNELS:
        return E164.match(address) is not None
    if channel == "email":
        local, _, domain = address.rpartition("@")
        return bool(local) and "." in domain
    return True


def decide(
    outgoing: Outgoing,
    *,
    address: str | None,
    recipient_kinds: tuple[str, ...],
    opted_out: bool,
    do_not_contact: bool,
    now: datetime,
    quiet_hours: QuietHours | None = None,
    opted_in: bool = False,
    window_open: bool = False,
) -> Decision:
    """Send, wait, or skip with a stable reason code (SPEC sections 3 and 7).

    Blocks in this order: the channel cannot reach the recipient; no or malformed address; the
    do-not-contact list (everything); SMS from a team not verified; an opt-out (SMS and WhatsApp:
    everything, other channels: non-transactional); WhatsApp without a recorded opt-in
    (`opted_in`), or outside the 24-hour window (`window_open`) with no template to send; an
    unsubscribed guest (non-transactional); a token the recipient has no value for
    (`missing_field`). A non-transactional SMS or WhatsApp message that would arrive in the
    team's quiet hours waits for them to end.
    """
    recipient = outgoing.recipient
    channel = outgoing.channel

    def blocked(reason: Reason) -> Decision:
        return skip(reason, skip_detail(reason, channel=channel, kind=recipient.kind))

    if recipient.kind not in recipient_kinds:
        return blocked(Reason.CHANNEL_UNSUPPORTED)
    if not address:
        return blocked(Reason.MISSING_ADDRESS)
    if not _address_is_valid(channel, address):
        return blocked(Reason.INVALID_ADDRESS)
    if do_not_contact:
        return blocked(Reason.DO_NOT_CONTACT)
    if channel == "sms" and not outgoing.team.sms_verified:
        return blocked(Reason.TEAM_NOT_VERIFIED)
    if opted_out and opt_out_applies(channel, transactional=outgoing.transactional):
        return blocked(Reason.OPTED_OUT)
    if channel == "whatsapp" and not opted_in:
        return blocked(Reason.NOT_OPTED_IN)
    if channel == "whatsapp" and not window_open and outgoing.template is None:
        return blocked(Reason.OUTSIDE_WINDOW)
    if recipient.kind == "guest" and not recipient.subscribed and not outgoing.transactional:
        return blocked(Reason.GUEST_UNSUBSCRIBED)
    missing = outgoing.missing_tokens()
    if missing:
        detail = skip_detail(
            Reason.MISSING_FIELD, channel=channel, kind=recipient.kind, token=missing[0]
        )
        return skip(Reason.MISSING_FIELD, detail)
    if channel in PHONE_CHANNELS and quiet_hours is not None and not outgoing.transactional:
        until = quiet_until(address, now, quiet_hours)
        if until is not None:
            return Decision("defer", detail="quiet hours", not_before=until)
    return SEND


def opt_out_applies(channel: str, *, transactional: bool) -> bool:
    """An SMS or WhatsApp opt-out (STOP) blocks everything; elsewhere transactional messages
    still go."""
    return channel in PHONE_CHANNELS or not transactional


_DETAILS = {
    Reason.CHANNEL_UNSUPPORTED: "{channel} reaches users only",
    Reason.MISSING_ADDRESS: "the {kind} has no {channel} address",
    Reason.INVALID_ADDRESS: "the {kind}'s {channel} address is invalid",
    Reason.DO_NOT_CONTACT: "{channel} address is on the do-not-contact list",
    Reason.TEAM_NOT_VERIFIED: "the team is not verified for SMS",
    Reason.OPTED_OUT: "the recipient opted out of {channel}",
    Reason.GUEST_UNSUBSCRIBED: "the guest is not subscribed",
    Reason.DUPLICATE_ADDRESS: "another recipient of this send has the same {channel} address",
    Reason.MISSING_FIELD: "the {kind} has no value for {{{{{token}}}}}",
    Reason.NOT_OPTED_IN: "the {kind} has no recorded opt-in for {channel}",
    Reason.OUTSIDE_WINDOW: "no message from the {kind} in 24 hours and the message has no template",
}


def skip_detail(reason: Reason, *, channel: str, kind: str, token: str = "") -> str:
    """The words after a skip's reason code, shared by the worker and the fan-out's up-front
    skips so that one reason always reads the same."""
    return _DETAILS[reason].format(channel=channel, kind=kind, token=token)


def counts_toward_cap(outgoing: Outgoing, *, transactional_bypass: bool) -> bool:
    """Only guests are capped; transactional messages are exempt while the bypass is on."""
    return outgoing.recipient.kind == "guest" and not (
        outgoing.transactional and transactional_bypass
    )


def over_cap(cap: int, window_days: int) -> Decision:
    return skip(Reason.FREQUENCY_CAP, f"the guest already got {cap} messages in {window_days} days")
