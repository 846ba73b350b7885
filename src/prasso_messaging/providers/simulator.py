"""The simulator: the providers of test messages (created with a test token), which reach no one.

A test send goes through the same channel, compliance, rendering and recording as a live one;
only the provider is this one. It answers as a real one would, magic recipients included (the
numbers are Twilio's test numbers):

- SMS to `+15005550001`: refused, invalid number (Twilio 21211); to `+15005550009`: refused,
  not a mobile number (Twilio 21614). Any other number: `sent`, then a `delivered` receipt.
- Email to `bounce@simulator.example.com`: `sent`, then a hard bounce (`failed`, `bounced`, the
  address opted out of email); to `complaint@simulator.example.com`: `sent`, then a complaint
  (`delivered`, the address opted out of email). Any other address: `sent`, then `delivered`.
- WhatsApp: the same numbers as SMS, with the same answers.
- Push: every subscription accepts (`sent`), as a push service does.

The later report is applied by `play_report` through the very code that applies a real one
(receipts.py, bounces.py), once the send is recorded.
"""

from __future__ import annotations

import uuid

from prasso_messaging import bounces, receipts
from prasso_messaging.db.engine import Database
from prasso_messaging.errors import PermanentSendError, Reason
from prasso_messaging.providers.base import (
    Accepted,
    Email,
    MailProvider,
    PushProvider,
    PushTarget,
    Sms,
    SmsProvider,
    WhatsApp,
    WhatsAppProvider,
)

NAME = "simulator"
INVALID_NUMBER = "+15005550001"
NOT_SMS_CAPABLE = "+15005550009"
BOUNCE_ADDRESS = "bounce@simulator.example.com"
COMPLAINT_ADDRESS = "complaint@simulator.example.com"

REFUSED_NUMBERS = {
    INVALID_NUMBER: "21211: The 'To' number {to} is not a valid phone number.",
    NOT_SMS_CAPABLE: "21614: 'To' number is not a valid mobile number",
}


def simulated_id() -> str:
    """A provider message id that says where it came from."""
    return "TEST" + uuid.uuid4().hex


class SimulatedMail(MailProvider):
    name = NAME

    async def send(self, email: Email) -> Accepted:
        return Accepted(f"<{simulated_id()}@simulator.example.com>")


def _answer_number(to: str) -> Accepted:
    """Twilio's answer to a message to `to`: a magic number's refusal, else accepted."""
    refusal = REFUSED_NUMBERS.get(to)
    if refusal is not None:
        raise PermanentSendError(Reason.PROVIDER_REJECTED, f"{NAME} {refusal.format(to=to)}")
    return Accepted(simulated_id())


class SimulatedSms(SmsProvider):
    name = NAME

    async def send(self, sms: Sms) -> Accepted:
        return _answer_number(sms.to)


class SimulatedWhatsApp(WhatsAppProvider):
    name = NAME

    async def send(self, message: WhatsApp) -> Accepted:
        return _answer_number(message.to)


class SimulatedPush(PushProvider):
    name = NAME

    async def send(self, target: PushTarget, payload: bytes, *, ttl: int) -> str | None:
        return simulated_id()


def simulated_push() -> dict[str, PushProvider]:
    """The simulator for every kind of device."""
    return {"webpush": SimulatedPush(), "fcm": SimulatedPush()}


async def play_report(
    database: Database, *, channel: str, address: str | None, provider_message_id: str
) -> None:
    """What the provider reports after a recorded send: an SMS or WhatsApp receipt, an email
    event."""
    if channel in ("sms", "whatsapp"):
        to = f"whatsapp:{address}" if channel == "whatsapp" and address else address
        report = receipts.StatusReport(
            provider_message_id, "delivered", to_number=to, provider=NAME
        )
        async with database.session() as session:
            await receipts.apply_status(session, report)
    elif channel == "email":
        kind: bounces.Kind = "delivered"
        detail = ""
        if address == BOUNCE_ADDRESS:
            kind, detail = "bounce", "550 5.1.1 simulated bounce"
        elif address == COMPLAINT_ADDRESS:
            kind, detail = "complaint", "simulated complaint"
        event = bounces.MailEvent(kind, provider_message_id, NAME, detail)
        async with database.session() as session:
            await bounces.apply_event(session, event)
