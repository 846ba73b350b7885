"""The `log` mail and SMS providers: every send lands in the local outbox table.

Lets a new user run the whole pipeline with no provider account, and lets the admin pages and
`prasso outbox` show exactly what would have gone out.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import insert

from prasso_messaging.addresses import mask_phone
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import OutboxMessage, table, utcnow
from prasso_messaging.providers.base import Email, MailProvider, Sms, SmsProvider

log = logging.getLogger(__name__)
outbox = table(OutboxMessage)


class OutboxMailer(MailProvider):
    def __init__(self, database: Database) -> None:
        self.database = database

    async def send(self, email: Email) -> str:
        message_id = email.headers.get("Message-ID") or f"<{uuid.uuid4()}@outbox.local>"
        async with self.database.connect() as conn:
            await conn.execute(
                insert(outbox).values(
                    team_id=email.team_id,
                    delivery_id=email.delivery_id,
                    channel="email",
                    to_address=email.to,
                    from_address=f"{email.from_name} <{email.from_address}>",
                    subject=email.subject,
                    body_text=email.text,
                    body_html=email.html,
                    headers=email.headers,
                    created_at=utcnow(),
                )
            )
        log.info("email to outbox: delivery=%s", email.delivery_id)
        return message_id


class OutboxSms(SmsProvider):
    def __init__(self, database: Database) -> None:
        self.database = database

    async def send(self, sms: Sms) -> str:
        sid = "LOG" + uuid.uuid4().hex
        async with self.database.connect() as conn:
            await conn.execute(
                insert(outbox).values(
                    team_id=sms.team_id,
                    delivery_id=sms.delivery_id,
                    channel="sms",
                    to_address=sms.to,
                    from_address=sms.from_number,
                    body_text=sms.body,
                    created_at=utcnow(),
                )
            )
        log.info("sms to outbox: delivery=%s to=%s", sms.delivery_id, mask_phone(sms.to))
        return sid
