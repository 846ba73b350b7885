"""Delivery receipts from the SMS providers (Twilio's WhatsApp ones too): `sent` → `delivered`
or `failed`, never backwards.

Each change is one conditional UPDATE on the (indexed) provider message id that only moves a
`sent` delivery, so a late, repeated or out-of-order callback changes nothing. A failure writes
the delivery's fallback on the message's next channel, if it names one (fallback.py).

A receipt can arrive before the worker has recorded the send (the provider answered, our write is
still on its way); the callback names the delivery (Twilio's URL, Vonage's `client-ref`), so such
a receipt waits a moment for the record instead of being lost. Either provider's receipt finds the
delivery by the message id that provider gave, whichever of a failover pair sent it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, table, utcnow
from prasso_messaging.errors import Reason
from prasso_messaging.fallback import write_fallbacks_in
from prasso_messaging.inbound import PROVIDER_OPT_OUT, record_sms_opt_out
from prasso_messaging.metrics import delivery_outcome
from prasso_messaging.providers.twilio import PREFIX as WHATSAPP_PREFIX
from prasso_messaging.providers.twilio import UNSUBSCRIBED_RECIPIENT
from prasso_messaging.webhook_events import DELIVERY_COLUMNS, emit_delivery_change

log = logging.getLogger(__name__)

deliveries = table(Delivery)
DELIVERED_STATUSES = frozenset({"delivered", "read"})
FAILED_STATUSES = frozenset({"failed", "undelivered", "rejected", "expired"})
FINAL_STATUSES = DELIVERED_STATUSES | FAILED_STATUSES
RECORD_WAIT_SECONDS = 5.0
RECORD_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class StatusReport:
    provider_message_id: str
    status: str
    error_code: str | None = None
    to_number: str | None = None
    provider: str = "twilio"


async def apply_status(session: AsyncSession, report: StatusReport) -> str | None:
    """Apply one callback; returns the delivery's new status, or None when nothing changed."""
    now = utcnow()
    conditions = (
        deliveries.c.provider_message_id == report.provider_message_id,
        deliveries.c.status == "sent",
    )
    status = report.status.lower()
    if status in DELIVERED_STATUSES:
        values: dict[str, object] = {"status": "delivered", "delivered_at": now, "updated_at": now}
    elif status in FAILED_STATUSES:
        code = report.error_code or "unknown"
        values = {
            "status": "failed",
            "failed_at": now,
            "updated_at": now,
            "reason": Reason.PROVIDER_REJECTED.value,
            "error": f"{Reason.PROVIDER_REJECTED}: {report.provider} {code}: message {status}",
        }
    else:  # queued, sending, sent, accepted: our delivery already says `sent`
        return None
    result = await session.execute(
        update(deliveries).where(*conditions).values(values).returning(*DELIVERY_COLUMNS)
    )
    changed = result.first()
    if changed is None:
        return None
    await emit_delivery_change(session, changed)
    if changed.status == "failed":
        await write_fallbacks_in(session, [changed.delivery_id])
    log.info("delivery receipt: %s → %s", report.provider_message_id, values["status"])
    reason = values.get("reason")
    channel = "whatsapp" if (report.to_number or "").startswith(WHATSAPP_PREFIX) else "sms"
    delivery_outcome(channel, str(values["status"]), reason if isinstance(reason, str) else None)
    opted_out = report.provider == "twilio" and report.error_code == str(UNSUBSCRIBED_RECIPIENT)
    if opted_out and report.to_number and changed.team_id:
        await record_sms_opt_out(
            session,
            team_id=changed.team_id,
            phone=report.to_number.removeprefix(WHATSAPP_PREFIX),
            origin=PROVIDER_OPT_OUT,
            channel=channel,
        )
    return str(values["status"])


async def wait_for_record(
    database: Database, *, delivery_id: int, timeout: float = RECORD_WAIT_SECONDS
) -> None:
    """Return once the delivery is no longer `queued` (its send is recorded), or on timeout."""
    query = select(deliveries.c.status).where(deliveries.c.id == delivery_id)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        async with database.engine.connect() as conn:
            status = (await conn.execute(query)).scalar_one_or_none()
        if status != "queued" or loop.time() >= give_up:
            return
        await asyncio.sleep(RECORD_POLL_SECONDS)
