"""Value types shared by compliance, rendering, channels and the delivery pipeline.

They carry no behaviour beyond what their fields imply, so every layer can import them without
importing each other: the pipeline builds them from the rows it claims, compliance decides on
them, channels render and send them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prasso_messaging.rendering import TokenValues, missing_tokens, sms_footer

RecipientKind = Literal["user", "guest"]


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: RecipientKind
    id: int
    first_name: str | None
    last_name: str | None
    name: str | None
    email: str | None
    phone: str | None
    subscribed: bool = True
    fields: Mapping[str, Any] = field(default_factory=dict)  # a guest's custom fields


@dataclass(frozen=True, slots=True)
class TeamProfile:
    """The team as channels need it: global settings already overridden by team settings."""

    id: int
    name: str
    sms_verified: bool
    sms_from_number: str | None
    business_name: str | None
    footer_text: str | None
    help_text: str | None
    email_from_address: str | None
    email_from_name: str | None
    sms_disclaimer: str | None = None

    @property
    def sms_footer(self) -> str:
        """What every SMS of the team ends with (`rendering.sms_footer`)."""
        return sms_footer(
            business_name=self.business_name,
            disclaimer=self.sms_disclaimer,
            stop_line=self.footer_text,
        )


@dataclass(frozen=True, slots=True)
class WhatsAppTemplate:
    """An approved WhatsApp template (Twilio content SID) and its variables, each a text with
    tokens: what a WhatsApp message sends outside the 24-hour customer-care window."""

    content_sid: str
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One delivery ready to render: the message, its recipient and the sending team."""

    delivery_id: int
    channel: str
    subject: str | None
    body: str
    transactional: bool
    recipient: Recipient
    team: TeamProfile
    data: Mapping[str, Any] = field(default_factory=dict)  # the send's values of tokens
    template: WhatsAppTemplate | None = None  # sent instead of the body (WhatsApp, window closed)

    @property
    def tokens(self) -> TokenValues:
        r = self.recipient
        return TokenValues(r.first_name, r.last_name, r.name, self.team.name, r.fields, self.data)

    def missing_tokens(self) -> list[str]:
        """The tokens of what is sent (the subject and body, or the template's variables) this
        recipient has no value for."""
        if self.template is not None:
            return missing_tokens(self.template.variables.values(), self.tokens)
        return missing_tokens((self.subject, self.body), self.tokens)


@dataclass(frozen=True, slots=True)
class Sent:
    """What a channel reports after the provider took a delivery.

    `outbox` is the row the `log` providers keep instead of sending: the pipeline writes it in
    the same transaction as the delivery's status, so the outbox never disagrees with it.
    """

    provider_message_id: str | None
    status: Literal["sent", "delivered"] = "sent"
    metadata: Mapping[str, Any] | None = None
    outbox: Mapping[str, Any] | None = None
