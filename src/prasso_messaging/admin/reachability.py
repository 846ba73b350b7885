"""Who a send on a channel would skip, and why, shown before sending.

The compose page's picker and preview ask the worker's own rule, `compliance.decide`, with the
channel's address and recipient kinds and the opt-out and do-not-contact flags of
`queries.listed_addresses`, and show its words (the ones a skipped delivery records); for push
they also ask what the push channel checks at send time (its providers, the user's
subscriptions); for WhatsApp, the team's opt-ins and each number's last inbound message (a
message composed here has no template, so a number outside the 24-hour window is skipped).
The team's SMS verification is shown once on the page, not next to every person,
so each person is judged as if the team were verified.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.admin import queries
from prasso_messaging.channels.base import Channel
from prasso_messaging.channels.push import PushChannel
from prasso_messaging.channels.whatsapp import window_open
from prasso_messaging.compliance import decide
from prasso_messaging.db.models import Team, utcnow
from prasso_messaging.domain import Outgoing, Recipient, TeamProfile

PUSH_NOT_CONFIGURED = "push is not configured: no VAPID keys and no FCM credentials are set"
NO_PUSH_SUBSCRIPTION = "the user has no push subscription"


async def flag_skipped(
    session: AsyncSession,
    *,
    team: Team,
    channels: dict[str, Channel],
    channel: str,
    transactional: bool,
    recipients: list[queries.Recipient],
) -> None:
    """Set `skipped_because` on each recipient a send on `channel` would skip today."""
    sender = channels.get(channel)
    if sender is None or not recipients:
        return
    profile = TeamProfile(team.id, team.name, True, None, None, None, None, None, None)
    people = {
        (r.kind, r.id): Recipient(r.kind, r.id, None, None, r.name, r.email, r.phone, r.subscribed)
        for r in recipients
    }
    addresses = {key: sender.address(person) for key, person in people.items()}
    listed = await queries.listed_addresses(
        session, team_id=team.id, addresses=[a for a in addresses.values() if a]
    )
    whatsapp = None
    if channel == "whatsapp":
        whatsapp = await queries.whatsapp_standing(
            session, team_id=team.id, phones=[a for a in addresses.values() if a]
        )
    with_push: set[int] = set()
    if isinstance(sender, PushChannel):
        with_push = await queries.users_with_push(
            session, user_ids=[r.id for r in recipients if r.kind == "user"]
        )
    now = utcnow()
    for r in recipients:
        key = (r.kind, r.id)
        address = addresses[key]
        decision = decide(
            Outgoing(0, channel, None, "", transactional, people[key], profile),
            address=address,
            recipient_kinds=sender.recipient_kinds,
            opted_out=(channel, address or "") in listed.opted_out,
            do_not_contact=(channel, address or "") in listed.do_not_contact,
            now=now,
            opted_in=whatsapp is not None and address in whatsapp.opted_in,
            window_open=whatsapp is not None
            and window_open(whatsapp.last_inbound.get(address or ""), now),
        )
        why = decision.detail
        if decision.action == "send" and isinstance(sender, PushChannel):
            if not sender.providers:
                why = PUSH_NOT_CONFIGURED
            elif r.id not in with_push:
                why = NO_PUSH_SUBSCRIPTION
        r.skipped_because = why
