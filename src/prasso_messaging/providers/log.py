"""The `log` mail, SMS and WhatsApp providers: every send lands in the local outbox table.

Lets a new user run the whole pipeline with no provider account, and lets the admin pages and
`prasso outbox` show exactly what would have gone out. The outbox row is handed back with the
answer and written by the delivery pipeline in the transaction that records the delivery, so a
row exists exactly when its delivery says it was sent.
"""

from __future__ import annotations

import json
import uuid

from prasso_messaging.db.models import utcnow
from prasso_messaging.providers.base import (
    Accepted,
    Email,
    MailProvider,
    Sms,
    SmsProvider,
    WhatsApp,
    WhatsAppProvider,
)


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


class OutboxWhatsApp(WhatsAppProvider):
    """A template send keeps its content SID and variables in the row's `headers` (and says
    so in the body), as Twilio would receive them."""

    name = "whatsapp_log"

    async def send(self, message: WhatsApp) -> Accepted:
        headers = None
        body = message.body or ""
        if message.content_sid:
            variables = dict(message.content_variables or {})
            headers = {"ContentSid": message.content_sid, "ContentVariables": variables}
            body = f"[template {message.content_sid}] {json.dumps(variables, ensure_ascii=False)}"
        return Accepted(
            "LOG" + uuid.uuid4().hex,
            outbox={
                "team_id": message.team_id,
                "delivery_id": message.delivery_id,
                "channel": "whatsapp",
                "to_address": f"whatsapp:{message.to}",
                "from_address": f"whatsapp:{message.from_number}" if message.from_number else None,
                "subject": None,
                "body_text": body,
                "body_html": None,
                "headers": headers,
                "created_at": utcnow(),
            },
        )
