"""One decision per delivery, made by the worker just before the send: send, or skip and why.

State can change between queueing and sending (an opt-out, a do-not-contact entry, a revoked
verification), so the check runs again here however the delivery was queued. `decide` is a pure
function over data loaded for the whole batch by `load_consent` in two queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.channels.base import Outgoing
from prasso_messaging.db.models import DoNotContact, OptOut, table
from prasso_messaging.errors import Reason

AddressKey = tuple[int, str, str]  # (team_id, channel, normalized address)


@dataclass(frozen=True)
class Decision:
    action: Literal["send", "skip"]
    reason: str | None = None
    detail: str = ""

    @property
    def error(self) -> str | None:
        if self.reason is None:
            return None
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


SEND = Decision("send")


def skip(reason: Reason, detail: str = "") -> Decision:
    return Decision("skip", reason.value, detail)


@dataclass(frozen=True)
class ConsentSnapshot:
    """Opt-outs and do-not-contact entries that touch the addresses of one batch."""

    opted_out: frozenset[AddressKey] = frozenset()
    do_not_contact: frozenset[AddressKey] = frozenset()


async def load_consent(conn: AsyncConnection, keys: Iterable[AddressKey]) -> ConsentSnapshot:
    wanted = list(set(keys))
    if not wanted:
        return ConsentSnapshot()

    async def matching(model: type[OptOut] | type[DoNotContact]) -> frozenset[AddressKey]:
        source = table(model)
        rows = await conn.execute(
            select(source.c.team_id, source.c.channel, source.c.address).where(
                tuple_(source.c.team_id, source.c.channel, source.c.address).in_(wanted)
            )
        )
        return frozenset((r.team_id, r.channel, r.address) for r in rows)

    return ConsentSnapshot(await matching(OptOut), await matching(DoNotContact))


def decide(
    outgoing: Outgoing,
    *,
    address: str | None,
    recipient_kinds: tuple[str, ...],
    consent: ConsentSnapshot,
) -> Decision:
    """Send, or skip with a stable reason code (SPEC sections 3 and 7)."""
    recipient = outgoing.recipient
    channel = outgoing.channel
    if recipient.kind not in recipient_kinds:
        return skip(Reason.CHANNEL_UNSUPPORTED, f"{channel} reaches users only")
    if not address:
        return skip(Reason.MISSING_ADDRESS, f"the {recipient.kind} has no {channel} address")
    key = (outgoing.team.id, channel, address)
    if key in consent.do_not_contact:
        return skip(Reason.DO_NOT_CONTACT, f"{channel} address is on the do-not-contact list")
    if channel == "sms" and not outgoing.team.sms_verified:
        return skip(Reason.TEAM_NOT_VERIFIED, "the team is not verified for SMS")
    if key in consent.opted_out and (channel == "sms" or not outgoing.transactional):
        return skip(Reason.OPTED_OUT, f"the recipient opted out of {channel}")
    if recipient.kind == "guest" and not recipient.subscribed and not outgoing.transactional:
        return skip(Reason.GUEST_UNSUBSCRIBED, "the guest is not subscribed")
    return SEND
