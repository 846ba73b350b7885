"""What a team's deliveries must respect: its quiet hours, pacing rate and guest cap, each the
team's own value or else the global setting (SPEC section 2).

Workers keep each team's policy and each message in memory, rebuilt only when the row's
`updated_at` changes: the claim reports both versions with every delivery, so a changed footer,
rate or body is seen by the next chunk without reloading unchanged rows for every one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prasso_messaging.compliance import QuietHours
from prasso_messaging.config import Settings
from prasso_messaging.domain import TeamProfile, WhatsAppTemplate
from prasso_messaging.errors import ValidationFailed
from prasso_messaging.message_content import whatsapp_template
from prasso_messaging.pacing import Pacer, Rate

log = logging.getLogger(__name__)

# in-app is our own table: nothing to pace
PACED_CHANNELS = frozenset(("email", "sms", "push", "whatsapp"))


@dataclass(frozen=True)
class Limits:
    """The global caps and pacing (SPEC section 2); teams may override each value."""

    pacer: Pacer | None
    rate: Rate
    per_guest_cap: int
    per_guest_window_days: int
    transactional_bypass: bool

    @classmethod
    def from_settings(cls, settings: Settings, pacer: Pacer | None) -> Limits:
        return cls(
            pacer=pacer,
            rate=Rate(settings.MESSAGING_BATCH_SIZE, settings.MESSAGING_BATCH_INTERVAL_SECONDS),
            per_guest_cap=settings.MESSAGING_PER_GUEST_MONTHLY_CAP,
            per_guest_window_days=settings.MESSAGING_PER_GUEST_WINDOW_DAYS,
            transactional_bypass=settings.MESSAGING_ALLOW_TRANSACTIONAL_BYPASS,
        )


UNLIMITED = Limits(
    pacer=None,
    rate=Rate(1, 1.0),
    per_guest_cap=0,
    per_guest_window_days=30,
    transactional_bypass=True,
)
"""No pacing and no caps: a bare pipeline in a unit test."""


@dataclass(frozen=True, slots=True)
class TeamPolicy:
    profile: TeamProfile
    quiet_hours: QuietHours | None
    rate: Rate
    own_pacing: bool
    cap: int
    window_days: int
    version: tuple[datetime | None, datetime | None]

    def pacing_key(self, channel: str) -> str:
        """Teams with their own pacing have their own slot log; the rest share the channel's."""
        return f"{channel}:team:{self.profile.id}" if self.own_pacing else channel


@dataclass(frozen=True, slots=True)
class MessageBody:
    subject: str | None
    body: str
    transactional: bool
    version: datetime | None
    data: Mapping[str, Any]  # the values of tokens its send gave
    test: bool = False  # created with a test token: sent through the simulator
    whatsapp_template: WhatsAppTemplate | None = None  # sent outside the 24-hour window
    fallback: tuple[str, ...] = ()  # the channels tried after its own (fallback.py)


def team_policy(row: Any, limits: Limits) -> TeamPolicy:
    """A team row joined with its settings row (`DeliveryRepository.teams`) → its policy."""
    profile = TeamProfile(
        id=row.id,
        name=row.name,
        sms_verified=row.sms_verification_status == "verified",
        sms_from_number=row.sms_from_number,
        business_name=row.business_name,
        footer_text=row.footer_text,
        help_text=row.help_text,
        email_from_address=row.email_from_address,
        email_from_name=row.email_from_name,
        sms_disclaimer=row.sms_disclaimer,
    )
    rate = limits.rate
    return TeamPolicy(
        profile=profile,
        quiet_hours=_quiet_hours(row.quiet_hours_start, row.quiet_hours_end),
        rate=Rate(row.batch_size or rate.limit, row.batch_interval_seconds or rate.interval),
        own_pacing=row.batch_size is not None or row.batch_interval_seconds is not None,
        cap=row.per_guest_cap if row.per_guest_cap is not None else limits.per_guest_cap,
        window_days=row.per_guest_window_days or limits.per_guest_window_days,
        version=(row.team_version, row.settings_version),
    )


def message_body(row: Any) -> MessageBody:
    return MessageBody(
        row.subject,
        row.body or "",
        bool(row.is_transactional),
        row.updated_at,
        row.data or {},
        bool(row.is_test),
        whatsapp_template(row.whatsapp_template),
        tuple(row.fallback or ()),
    )


def _quiet_hours(start: str | None, end: str | None) -> QuietHours | None:
    try:
        return QuietHours.from_strings(start, end)
    except ValidationFailed:  # stored before validation existed: ignore rather than block
        log.warning("ignoring malformed quiet hours %r-%r", start, end)
        return None
