"""Request and response bodies: separate Create and Public shapes per resource."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from prasso_messaging.api.input_rules import unstorable

T = TypeVar("T")
BodyId = Annotated[int, Field(ge=1, le=2**63 - 1)]
AddressChannel = Literal["email", "sms", "whatsapp"]
MessageType = Literal["email", "sms", "push", "inapp", "whatsapp"]
Tag = Annotated[str, Field(max_length=64)]

FIELDS_DESCRIPTION = (
    "Custom fields: a JSON object of names (a letter, then letters, digits or _; not a built-in "
    "token) to text, numbers or true/false. `{{name}}` in a message reads the guest's value, "
    "before the send's `data`."
)
TAGS_DESCRIPTION = (
    "Tags (trimmed, lower-cased, at most 64 characters, no commas): lists a send may target "
    "with `tags`."
)


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 instead of being ignored, and
    values no database or JSON encoder can hold (NUL, lone surrogates, NaN), so they never 500.
    Types are strict: `"yes"` is not a boolean nor `"5"` an id (a loose `"transactional":
    "yes"` once bypassed the frequency cap); times stay ISO strings (`strict=False` on them)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        problem = unstorable(value)
        if problem is not None:
            raise PydanticCustomError("unstorable", problem)
        return value


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class UserCreate(Strict):
    name: str = Field(min_length=1, max_length=255)
    email: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, max_length=64)


class UserUpdate(Strict):
    """Only the fields sent change; `null` clears an address."""

    name: str = Field(default="", min_length=1, max_length=255)
    email: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, max_length=64)


class UserPublic(Public):
    id: int
    team_id: int
    name: str
    email: str | None
    phone: str | None
    created_at: datetime | None
    updated_at: datetime | None


class GuestCreate(Strict):
    first_name: str | None = Field(default=None, max_length=255)
    last_name: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, max_length=64)
    subscribed: bool = True
    fields: dict[str, Any] | None = Field(default=None, description=FIELDS_DESCRIPTION)
    tags: list[Tag] = Field(default_factory=list, max_length=50, description=TAGS_DESCRIPTION)


class GuestUpdate(Strict):
    """`PATCH /api/guests/{id}`: only the fields sent change; `null` clears a name or an address
    (a guest keeps an email or a phone)."""

    first_name: str | None = Field(default=None, max_length=255)
    last_name: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, max_length=64)
    subscribed: bool = True
    fields: dict[str, Any] | None = Field(
        default=None,
        description="Merged into the guest's custom fields (a JSON merge patch): a name with "
        "null removes it, names not given stay. " + FIELDS_DESCRIPTION,
    )
    tags: list[Tag] | None = Field(
        default=None, max_length=50, description="Replaces the guest's tags. " + TAGS_DESCRIPTION
    )


class GuestPublic(Public):
    id: int
    team_id: int
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    subscribed: bool
    opted_out: list[str] = []
    fields: dict[str, Any] = Field(default_factory=dict, description=FIELDS_DESCRIPTION)
    tags: list[str] = Field(default_factory=list, description=TAGS_DESCRIPTION)
    created_at: datetime | None
    updated_at: datetime | None

    @field_validator("fields", mode="before")
    @classmethod
    def _no_fields(cls, value: Any) -> Any:
        return {} if value is None else value


class GuestCap(BaseModel):
    sent_in_window: int = Field(
        description="counted sends in the current window (done or in flight)"
    )
    limit: int | None = Field(
        description="the team's cap, else MESSAGING_PER_GUEST_MONTHLY_CAP; null: none"
    )
    window_days: int


class GuestDetail(GuestPublic):
    """One guest, with where it stands against the frequency cap."""

    cap: GuestCap


class ChannelChoice(Strict):
    channel: AddressChannel


class ConsentChange(Public):
    guest_id: int
    channel: str
    opted_out: bool


class DoNotContactEntry(Strict):
    channel: AddressChannel
    address: str = Field(min_length=1, max_length=255)
    reason: str | None = Field(default=None, max_length=1000)


class DoNotContactPublic(Public):
    id: int
    channel: str
    address: str
    reason: str | None
    created_at: datetime


class WhatsAppTemplateIn(Strict):
    content_sid: str = Field(
        max_length=34,
        description="The approved template's Twilio content SID: HX and 32 hexadecimal digits.",
    )
    variables: dict[str, str] = Field(
        default_factory=dict,
        description='Its variables by name ("1", "2", ...), each a text with tokens rendered '
        'per recipient as in a body, e.g. {"1": "{{FirstName}}"}.',
    )


class MessageCreate(Strict):
    type: MessageType | None = Field(
        default=None, description="Required, unless the message comes from a template."
    )
    subject: str | None = Field(default=None, max_length=255)
    body: str | None = Field(
        default=None,
        max_length=100_000,
        description="Required, unless the message comes from a template. Tokens: "
        "`{{FirstName}}`, `{{LastName}}`, `{{Name}}`, `{{TeamName}}`, and any name the guests' "
        "custom fields or the send's `data` give (checked when it is sent).",
    )
    transactional: bool = False
    template_id: BodyId | None = Field(
        default=None,
        description="Create the message from this template: its channel, subject and body "
        "(leave type, subject and body out).",
    )
    template_version: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="The template's version to use (default: its current).",
    )
    whatsapp_template: WhatsAppTemplateIn | None = Field(
        default=None,
        description="WhatsApp only: the approved template sent to a recipient who has not "
        "written in the last 24 hours (free-form text goes only inside that window); without "
        "it such a recipient is skipped `outside_window`.",
    )
    fallback: list[MessageType] | None = Field(
        default=None,
        max_length=8,
        description="Channels to try in order for a recipient the message's type cannot reach "
        "(no address, opted out of it, refused for good by the provider): each distinct, none "
        "the message's own type. Push and in-app reach users only.",
    )


class MessagePublic(Public):
    id: int
    team_id: int | None
    type: str
    subject: str | None
    body: str | None
    transactional: bool = Field(validation_alias="is_transactional")
    template_id: int | None = Field(description="The template the message was created from.")
    template_version: int | None = Field(
        description="The template's version: every delivery of the message used it."
    )
    data: dict[str, Any] | None = Field(
        description="The values of tokens its send gave (`data` of `POST /api/messages/send`)."
    )
    whatsapp_template: dict[str, Any] | None = Field(
        default=None,
        description="WhatsApp: the approved template (`content_sid`, `variables`) sent outside "
        "the 24-hour window.",
    )
    test: bool = Field(
        validation_alias="is_test",
        description="Created with a test token: its deliveries reach no provider (the simulator "
        "plays the outcomes) and count toward no cap nor pacing.",
    )
    cancelled_at: datetime | None = Field(
        description="set by `POST /api/messages/{id}/cancel`; a cancelled message sends no more"
    )
    fallback: list[str] | None = Field(
        default=None, description="The channels tried, in order, after the message's own type."
    )
    created_at: datetime | None
    updated_at: datetime | None


class MessageWithCounts(MessagePublic):
    deliveries: dict[str, int]


class MessageCancelled(BaseModel):
    message_id: int
    cancelled: int = Field(description="deliveries this call skipped with reason `cancelled`")
    cancelled_at: datetime = Field(description="when the message was first cancelled")
    deliveries: dict[str, int] = Field(
        description="the message's deliveries by status once none is in flight: those a worker "
        "was already sending when the cancel came end as what really happened (sent, failed)"
    )


class SendCreate(Strict):
    message_id: BodyId
    user_ids: list[BodyId] = Field(default_factory=list, max_length=1_000_000)
    guest_ids: list[BodyId] = Field(default_factory=list, max_length=1_000_000)
    all_guests: bool = False
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=50,
        description="Guests holding any of these tags (each once, beside guest_ids).",
    )
    data: dict[str, Any] | None = Field(
        default=None,
        description="Values of the message's `{{name}}` tokens for every recipient; a guest's "
        "own custom field of the same name comes first. Kept with the message: a later send "
        "of it may repeat these values or leave them out. A token that is neither a built-in, "
        "a key of data, nor a custom field of the team's guests is a 422 naming it.",
    )
    send_at: AwareDatetime | None = Field(default=None, strict=False)


class SendAccepted(BaseModel):
    message_id: int
    queued: int
    skipped: int = Field(description="Deliveries skipped at once (counted in skipped_reasons).")
    skipped_reasons: dict[str, int] = Field(
        default_factory=dict,
        description="Skipped deliveries by reason code: what compliance refuses before any "
        "send (opted_out, do_not_contact, missing_address, guest_unsubscribed, "
        "channel_unsupported), a second recipient with one address (duplicate_address) and "
        "a guest without a value for a token (missing_field).",
    )
    fallbacks: int = Field(
        default=0,
        description="Of the queued deliveries, those on the message's first fallback channel "
        "for recipients skipped at once for a fallback reason (each `fallback_of` the skip).",
    )


class DeliveryPublic(Public):
    id: int
    team_id: int | None
    msg_message_id: int
    recipient_type: str
    recipient_id: int
    channel: str
    status: str
    fallback_of: int | None = Field(
        default=None,
        description="The delivery on an earlier channel of the message that this one replaces.",
    )
    provider_message_id: str | None
    reason: str | None = Field(description="the stable code `error` starts with")
    template_id: int | None = Field(description="The template its message was created from.")
    template_version: int | None = Field(
        description="The template version it used (its message's)."
    )
    test: bool = Field(
        validation_alias="is_test",
        description="Its message is a test message: the simulator, not a provider, sent it.",
    )
    error: str | None
    metadata: dict[str, Any] | None = Field(validation_alias="meta")
    attempts: int
    send_at: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


class TemplateCreate(Strict):
    name: str = Field(min_length=1, max_length=255, description="Unique within the team.")
    channel: MessageType = Field(description="The type of the messages created from it.")
    subject: str | None = Field(default=None, max_length=255)
    body: str = Field(max_length=100_000, description="Tokens as in a message body.")


class TemplateUpdate(Strict):
    """A changed subject or body is a new version, which becomes the current one."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    channel: MessageType | None = Field(
        default=None, description="A template keeps its channel: only the same one is accepted."
    )
    subject: str | None = Field(default=None, max_length=255, description="null removes it.")
    body: str | None = Field(default=None, max_length=100_000)


class TemplatePublic(Public):
    id: int
    team_id: int
    name: str
    channel: str
    subject: str | None
    body: str
    version: int = Field(description="The version shown (the current one unless ?version=).")
    current_version: int
    created_at: datetime | None
    updated_at: datetime | None


class WebhookEndpointCreate(Strict):
    url: str = Field(
        min_length=1, max_length=2048, description="An absolute http:// or https:// URL."
    )
    events: list[str] = Field(
        description="Event types to receive: delivery.sent, delivery.delivered, delivery.failed,"
        " delivery.skipped, inbound.received, consent.changed."
    )


class WebhookEndpointPublic(Public):
    id: int
    url: str
    events: list[str]
    created_at: datetime


class WebhookEndpointCreated(WebhookEndpointPublic):
    secret: str = Field(
        description="Signs every request (`Prasso-Signature`); shown only in this answer."
    )
