"""Email outcomes reported after the send: delivered, bounced, complained.

They come from the mail services' event webhooks (Mailgun, signed with HMAC-SHA256; Postmark,
behind HTTP basic auth) and from RFC 3464 delivery status notifications (`prasso mail bounces`).
Each source is read into one `MailEvent`, and `apply_event` does the rest:

- `delivered`: `sent` → `delivered`.
- `bounce` (permanent): `sent` → `failed`, reason `bounced`; the address is opted out of email,
  and the message's next channel, if it names one, gets a fallback delivery (fallback.py).
- `complaint` (the recipient marked it as spam): the mail arrived, so `sent` → `delivered`; the
  address is opted out of email.
- `soft_bounce` (temporary): nothing changes; the service (or the remote MTA) is still trying.

Like the SMS receipts (receipts.py), a status only ever moves from `sent`, so a late, repeated or
out-of-order event changes nothing; an opt-out is logged as a consent event only the first time,
so a replayed event leaves no trace either.

An event finds its delivery by our `Message-ID` (the delivery's `provider_message_id`): random,
so a forged report cannot name someone else's mail. Mailgun echoes it in
`message.headers.message-id`; Postmark echoes the `X-PM-Metadata-prasso-message-id` header the
email channel adds; a DSN quotes it in the returned headers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message as MimeMessage
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging import consent
from prasso_messaging.channels.email import POSTMARK_METADATA_KEY
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, Guest, User, table, utcnow
from prasso_messaging.errors import Reason
from prasso_messaging.fallback import write_fallbacks_in
from prasso_messaging.metrics import delivery_outcome
from prasso_messaging.webhook_events import DELIVERY_COLUMNS, emit_delivery_change

log = logging.getLogger(__name__)

deliveries = table(Delivery)

Kind = Literal["delivered", "bounce", "soft_bounce", "complaint"]
Outcome = Literal["delivered", "failed", "unchanged", "unmatched"]

POSTMARK_HARD_TYPES = frozenset({"HardBounce", "BadEmailAddress"})
MAILGUN_MAX_AGE_SECONDS = 300
"""How old a Mailgun signature's timestamp may be (either way) before the event is refused."""
DETAIL_LENGTH = 200
STATUS_CODE = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class MailEvent:
    kind: Kind
    message_id: str
    """Our Message-ID as the report quotes it (angle brackets or not)."""
    source: str
    """`mailgun`, `postmark` or `dsn`: for the delivery's error and the consent event."""
    detail: str = ""


@dataclass(frozen=True)
class Applied:
    outcome: Outcome
    opted_out: bool = False


# --- apply ---------------------------------------------------------------------------------------


def message_id_forms(message_id: str) -> list[str]:
    """The id with and without angle brackets: services quote it either way."""
    bare = message_id.strip().removeprefix("<").removesuffix(">")
    return [f"<{bare}>", bare] if bare else []


async def apply_event(session: AsyncSession, event: MailEvent) -> Applied:
    """Apply one event to the email delivery it names; `unmatched` when there is none."""
    forms = message_id_forms(event.message_id)
    if not forms:
        return Applied("unmatched")
    found = (
        await session.execute(
            select(
                deliveries.c.id,
                deliveries.c.team_id,
                deliveries.c.recipient_type,
                deliveries.c.recipient_id,
            ).where(
                or_(*(deliveries.c.provider_message_id == form for form in forms)),
                deliveries.c.channel == "email",
            )
        )
    ).first()
    if found is None:
        log.info("mail event for no delivery of ours: %s %s", event.source, event.kind)
        return Applied("unmatched")
    outcome = await _move(session, found.id, event)
    opted_out = False
    if event.kind in ("bounce", "complaint") and found.team_id is not None:
        opted_out = await _opt_out(session, found, event)
    return Applied(outcome, opted_out)


async def _move(session: AsyncSession, delivery_id: int, event: MailEvent) -> Outcome:
    """The conditional UPDATE: only a `sent` delivery moves, never one already final."""
    now = utcnow()
    if event.kind in ("delivered", "complaint"):
        values: dict[str, object] = {"status": "delivered", "delivered_at": now, "updated_at": now}
    elif event.kind == "bounce":
        detail = f": {event.detail}" if event.detail else ""
        values = {
            "status": "failed",
            "failed_at": now,
            "updated_at": now,
            "reason": Reason.BOUNCED.value,
            "error": f"{Reason.BOUNCED}: {event.source}{detail}",
        }
    else:  # a soft bounce: the mail may still arrive
        return "unchanged"
    result = await session.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status == "sent")
        .values(values)
        .returning(*DELIVERY_COLUMNS)
    )
    moved = result.first()
    if moved is None:
        return "unchanged"
    await emit_delivery_change(session, moved)
    status = str(values["status"])
    if status == "failed":
        await write_fallbacks_in(session, [delivery_id])
    reason = values.get("reason")
    delivery_outcome("email", status, reason if isinstance(reason, str) else None)
    log.info("mail event: delivery %s → %s (%s %s)", delivery_id, status, event.source, event.kind)
    return "delivered" if status == "delivered" else "failed"


async def _opt_out(session: AsyncSession, found: Any, event: MailEvent) -> bool:
    """Opt the delivery's recipient address out of email (not an address the report names:
    only the mail we sent to it can take it out)."""
    model = User if found.recipient_type == "user" else Guest
    address = (
        await session.execute(select(model.email).where(model.id == found.recipient_id))
    ).scalar_one_or_none()
    if not address:
        return False
    guest_id = found.recipient_id if model is Guest else None
    method = "bounce" if event.kind == "bounce" else "complaint"
    source = f"{event.source}: {event.detail}" if event.detail else event.source
    return await consent.opt_out_address(
        session,
        team_id=found.team_id,
        channel="email",
        address=address,
        origin=consent.ConsentSource(method=method, source=source[:255]),
        guest_id=guest_id,
        only_if_new=True,
    )


async def record_provider_opt_out(
    database: Database, *, team_id: int, address: str, detail: str
) -> None:
    """A mail service refused a send because it marked the address inactive (a hard bounce or
    complaint it saw before, e.g. Postmark's 406): opt the address out of email as a bounce does."""
    origin = consent.ConsentSource(method="bounce", source=detail[:255] or None)
    async with database.session() as session:
        await consent.opt_out_address(
            session,
            team_id=team_id,
            channel="email",
            address=address,
            origin=origin,
            only_if_new=True,
        )
    log.info("email opt-out recorded from the mail service: team=%s", team_id)


def _detail(*parts: object) -> str:
    text = " ".join(str(p).strip() for p in parts if p not in (None, ""))
    return " ".join(text.split())[:DETAIL_LENGTH]


# --- Mailgun -------------------------------------------------------------------------------------


class SeenTokens:
    """Mailgun tokens seen within the signature's age limit, to refuse a replayed request.

    Kept in the process: a replay reaching another web process is still harmless, since applying
    an event twice changes nothing (see the module docstring)."""

    def __init__(self, max_age: float = MAILGUN_MAX_AGE_SECONDS) -> None:
        self.max_age = max_age
        self._seen: dict[str, float] = {}

    def first_use(self, token: str, *, now: float) -> bool:
        """Remember `token`; False if it was already used."""
        if len(self._seen) > 1000:
            self._seen = {t: at for t, at in self._seen.items() if now - at <= 2 * self.max_age}
        if token in self._seen:
            return False
        self._seen[token] = now
        return True


def mailgun_signature_problem(signature: Any, *, key: str, seen: SeenTokens) -> str | None:
    """Why a Mailgun `signature` object is not to be trusted, or None.

    Mailgun signs the concatenated timestamp and token with HMAC-SHA256 keyed by the webhook
    signing key; the timestamp must be recent and the token unused."""
    if not isinstance(signature, Mapping):
        return "missing signature"
    timestamp, token, digest = (signature.get(k) for k in ("timestamp", "token", "signature"))
    if not (isinstance(token, str) and isinstance(digest, str) and token and digest):
        return "missing signature"
    try:
        when = float(str(timestamp))
    except ValueError:
        return "bad signature timestamp"
    expected = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest.lower()):
        return "invalid signature"
    now = time.time()
    if abs(now - when) > seen.max_age:
        return "signature timestamp too old"
    if not seen.first_use(token, now=now):
        return "signature token already used"
    return None


def mailgun_event(event_data: Any) -> MailEvent | None:
    """The event of Mailgun's `event-data`, or None for events that change nothing here
    (opened, clicked, accepted, ...)."""
    if not isinstance(event_data, Mapping):
        return None
    message = event_data.get("message")
    headers = message.get("headers") if isinstance(message, Mapping) else None
    message_id = headers.get("message-id") if isinstance(headers, Mapping) else None
    if not isinstance(message_id, str):
        return None
    name = event_data.get("event")
    status = event_data.get("delivery-status")
    status = status if isinstance(status, Mapping) else {}
    kind: Kind
    if name == "delivered":
        kind = "delivered"
    elif name == "failed":
        kind = "bounce" if event_data.get("severity") == "permanent" else "soft_bounce"
    elif name == "complained":
        kind = "complaint"
    else:
        return None
    detail = _detail(status.get("code"), status.get("message") or status.get("description"))
    return MailEvent(kind, message_id, "mailgun", detail)


# --- Postmark ------------------------------------------------------------------------------------


def postmark_event(payload: Any) -> MailEvent | None:
    """The event of a Postmark webhook, matched through the metadata the email carried; None for
    record types that change nothing here (Open, Click, SubscriptionChange)."""
    if not isinstance(payload, Mapping):
        return None
    metadata = payload.get("Metadata")
    message_id = metadata.get(POSTMARK_METADATA_KEY) if isinstance(metadata, Mapping) else None
    if not isinstance(message_id, str):
        return None
    record = payload.get("RecordType")
    kind: Kind
    if record == "Delivery":
        kind = "delivered"
    elif record == "Bounce":
        permanent = payload.get("Type") in POSTMARK_HARD_TYPES or payload.get("Inactive") is True
        kind = "bounce" if permanent else "soft_bounce"
    elif record == "SpamComplaint":
        kind = "complaint"
    else:
        return None
    detail = _detail(payload.get("Type"), payload.get("Details") or payload.get("Description"))
    return MailEvent(kind, message_id, "postmark", detail)


# --- RFC 3464 delivery status notifications ------------------------------------------------------


def dsn_event(message: MimeMessage) -> MailEvent | None:
    """The event of a `multipart/report; report-type=delivery-status` message, or None for any
    other message (or a report on mail we cannot name).

    Per recipient, `Action: failed` with a 5.x.x `Status` is a hard bounce, 4.x.x a soft one,
    `Action: delayed` a soft one, `Action: delivered` a delivery."""
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type", "")).lower() != "delivery-status":
        return None
    status_part = original = None
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/delivery-status" and status_part is None:
            status_part = part
        elif content_type in ("message/rfc822", "text/rfc822-headers") and original is None:
            original = part
    if status_part is None or original is None:
        return None
    message_id = _original_message_id(original)
    if not message_id:
        return None
    for fields in _recipient_fields(status_part):
        action = fields.get("action", "").lower()
        status = fields.get("status", "").split()[0] if fields.get("status") else ""
        code = STATUS_CODE.match(status)
        detail = _detail(status, fields.get("diagnostic-code", "").partition(";")[2])
        if action == "failed" and code:
            kind: Kind = "bounce" if code.group(1) == "5" else "soft_bounce"
            return MailEvent(kind, message_id, "dsn", detail)
        if action == "delayed":
            return MailEvent("soft_bounce", message_id, "dsn", detail)
        if action == "delivered":
            return MailEvent("delivered", message_id, "dsn", detail)
    return None


def _recipient_fields(part: MimeMessage) -> list[dict[str, str]]:
    """The per-recipient field groups of a `message/delivery-status` part, names lower-cased
    (the email package parses each group as a message; the first is per message)."""
    payload = part.get_payload()
    groups = [
        {k.lower(): str(v) for k, v in group.items()}
        for group in (payload if isinstance(payload, list) else [])
        if isinstance(group, MimeMessage)
    ]
    return groups[1:]


def _original_message_id(part: MimeMessage) -> str | None:
    """The Message-ID of the returned original (a whole message, or its headers as text)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], MimeMessage):
        value = payload[0].get("Message-ID")
        return str(value).strip() if value else None
    from email.parser import HeaderParser

    raw = part.get_payload(decode=True)
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(payload)
    value = HeaderParser().parsestr(text, headersonly=True).get("Message-ID")
    return str(value).strip() if value else None


# --- an mbox of delivery status notifications ----------------------------------------------------


@dataclass
class MboxSummary:
    messages: int = 0
    reports: int = 0
    """Messages that are delivery status notifications naming a Message-ID."""
    delivered: int = 0
    failed: int = 0
    unchanged: int = 0
    unmatched: int = 0
    opted_out: int = 0

    def count(self, applied: Applied) -> None:
        self.reports += 1
        setattr(self, applied.outcome, getattr(self, applied.outcome) + 1)
        self.opted_out += applied.opted_out


def mbox_size(path: Path) -> int:
    """How many messages the mbox holds (for a progress bar); raises OSError if unreadable."""
    import mailbox

    box = mailbox.mbox(path, create=False)
    try:
        return len(box)
    finally:
        box.close()


async def apply_mbox(
    database: Database, path: Path, *, on_message: Callable[[], None] | None = None
) -> MboxSummary:
    """Apply every delivery status notification in the mbox at `path`, one transaction each;
    other messages are counted and skipped. Raises OSError if the file cannot be read."""
    import email.policy
    import mailbox

    box = mailbox.mbox(path, factory=None, create=False)
    summary = MboxSummary()
    try:
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            summary.messages += 1
            event = dsn_event(email.message_from_bytes(raw, policy=email.policy.compat32))
            if event is not None:
                async with database.session() as session:
                    summary.count(await apply_event(session, event))
            if on_message is not None:
                on_message()
    finally:
        box.close()
    return summary
