"""The `log` mail and SMS providers: every send lands in the local outbox table.

Lets a new user run the whole pipeline with no provider account, and lets the admin pages and
`prasso outbox` show exactly what would have gone out. The outbox row is handed back with the
answer and written by the delivery pipeline in the transaction that records the delivery, so a
row exists exactly when its delivery says it was sent.
"""

from __future__ import annotations

import uuid

from prasso_messaging.db.models import utcnow
from prasso_messaging.providers.base import Accepted, Email, MailProvider, Sms, SmsProvider


class OutboxMailer(MailProvider):
    name = "mail_log"

    async def send(self, email: Email) -> Accepted:
        message_id = email.headers.get("Message-ID") or f"<{uuid.uuid4()}@outbox.local>"
        return Accepted(
            message_id,
            outbox={
                "team_id": email.team_id,
                "delivery_id": email.delivery_id,
                "channel": "email",
                "to_address": email.to,
                "from_address": f"{email.from_name} <{email.from_address}>",
                "subject": email.subject,
                "body_text": email.text,
                "body_html": email.html,
                "headers": email.headers,
                "created_at": utcnow(),
            },
        )


class OutboxSms(SmsProvider):
    name = "sms_log"

    async def send(self, sms: Sms) -> Accepted:
        return Accepted(
            "LOG" + uuid.uuid4().hex,
            outbox={
                "team_id": sms.team_id,
                "delivery_id": sms.delivery_id,
                "channel": "sms",
                "to_address": sms.to,
                "from_address": sms.from_number,
                "subject": None,
                "body_text": sms.body,
                "body_html": None,
                "headers": None,
                "created_at": utcnow(),
            },
        )
