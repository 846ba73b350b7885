"""The tables. `msg_messages` and `msg_deliveries` keep the seed's columns exactly.

Declared once with the ORM (for CRUD) and used through `table(Model)` for bulk Core statements.
Times are stored in UTC and always come back timezone-aware, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    select,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and returned timezone-aware on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Timestamps:
    created_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)


# --- teams, access -------------------------------------------------------------------------------


class Team(Timestamps, Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    # unverified | pending | verified | revoked (SMS needs verified)
    sms_verification_status: Mapped[str] = mapped_column(
        String(20), default="unverified", server_default="unverified"
    )


class TeamSettings(Timestamps, Base):
    """Per-team overrides of the global settings; NULL means "use the global value"."""

    __tablename__ = "team_settings"

    team_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    sms_from_number: Mapped[str | None] = mapped_column(String(32))
    business_name: Mapped[str | None] = mapped_column(String(255))
    help_text: Mapped[str | None] = mapped_column(Text)
    footer_text: Mapped[str | None] = mapped_column(Text)
    sms_disclaimer: Mapped[str | None] = mapped_column(Text)  # in the SMS footer, before STOP
    email_from_address: Mapped[str | None] = mapped_column(String(255))
    email_from_name: Mapped[str | None] = mapped_column(String(255))
    batch_size: Mapped[int | None] = mapped_column(Integer)
    batch_interval_seconds: Mapped[float | None] = mapped_column(Float)
    per_guest_cap: Mapped[int | None] = mapped_column(Integer)
    per_guest_window_days: Mapped[int | None] = mapped_column(Integer)
    quiet_hours_start: Mapped[str | None] = mapped_column(String(5))  # "21:00"
    quiet_hours_end: Mapped[str | None] = mapped_column(String(5))  # "08:00"


class TeamVerificationEvent(Base):
    """Audit trail of every verification change: who, when, from, to, why."""

    __tablename__ = "team_verification_events"
    __table_args__ = (Index(None, "team_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(20), default="sms")
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """Team API tokens: only a SHA-256 digest is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("teams.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255), default="default")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    # ours: a test token's messages are test messages (docs/testing.md)
    test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class AdminUser(Timestamps, Base):
    """People who log in to the admin pages; each belongs to one team."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("teams.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column()
    last_login_at: Mapped[datetime | None] = mapped_column()
    # in every session cookie; logging out increments it, which ends every copy of the cookie
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


# --- recipients ----------------------------------------------------------------------------------


class User(Timestamps, Base):
    """Team members: receive every channel, including push and in-app."""

    __tablename__ = "users"
    __table_args__ = (Index(None, "team_id", "id"), Index(None, "team_id", "phone"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(32))


class Guest(Timestamps, Base):
    """Contacts: email and SMS only, with a subscription status."""

    __tablename__ = "guests"
    __table_args__ = (
        Index(None, "team_id", "id"),
        Index(None, "team_id", "phone"),
        Index(None, "team_id", "email"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(32))
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    opt_in_requested_at: Mapped[datetime | None] = mapped_column()  # double opt-in pending
    anonymized_at: Mapped[datetime | None] = mapped_column()
    # custom fields for `{{name}}` tokens: names as `guest_fields.FIELD_NAME`, scalar values
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class GuestTag(Base):
    """A guest's tag (lower case): a send to `tags` reaches the guests holding any of them,
    found through the (team, tag, guest) index on SQLite and PostgreSQL alike."""

    __tablename__ = "guest_tags"
    __table_args__ = (Index(None, "team_id", "tag", "guest_id"),)

    guest_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("guests.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))


class GuestFieldName(Base):
    """The custom field names a team's guests have used: what a `{{name}}` token may refer to
    at send time. Names are added as guests get fields and never removed (a guest without
    the field is skipped `missing_field`, not refused)."""

    __tablename__ = "guest_field_names"

    team_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)


class GuestImport(Base):
    """A CSV import of guests, worked by the queue's workers in chunks (`guest_import`).

    The uploaded file is kept here, where every worker can read it, until the import finishes;
    the counts and `processed` move together, one committed chunk at a time, so an import whose
    worker died resumes after the last chunk committed.
    """

    __tablename__ = "guest_imports"
    __table_args__ = (Index(None, "team_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20))  # queued | running | done | failed
    total: Mapped[int] = mapped_column(Integer)
    processed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    existing: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rejected: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error_lines: Mapped[list[Any]] = mapped_column(JSON)  # [{"line", "message"}], bounded
    failure: Mapped[str | None] = mapped_column(Text)  # why a failed import stopped
    content: Mapped[bytes | None] = mapped_column(LargeBinary)  # the CSV, until finished
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class PushSubscription(Base):
    """A device of a user: a browser's Web Push subscription (`kind` webpush: its endpoint and
    keys), or an app's FCM registration token (`kind` fcm: the token in `endpoint`, no keys)."""

    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16), default="webpush", server_default="webpush")
    endpoint: Mapped[str] = mapped_column(Text)
    p256dh: Mapped[str] = mapped_column(String(255))
    auth: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "endpoint"),)


# --- consent -------------------------------------------------------------------------------------


class OptOut(Base):
    """A per-channel opt-out, keyed by the normalized address (E.164 phone, case-folded email).

    Keyed by address rather than by contact because carriers and mailbox providers block per
    address: a STOP from a number stops SMS to that number whichever contact carries it.
    """

    __tablename__ = "msg_opt_outs"
    __table_args__ = (UniqueConstraint("team_id", "channel", "address"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentEvent(Base):
    """Every opt-in and opt-out, append-only."""

    __tablename__ = "msg_consent_events"
    __table_args__ = (
        Index(None, "team_id", "guest_id", "created_at"),
        Index(None, "address", "channel", "team_id"),  # WhatsApp opt-ins, by number
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    guest_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("guests.id", ondelete="SET NULL")
    )
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(20))  # opt_in | opt_out | opt_in_requested
    method: Mapped[str] = mapped_column(String(40))  # api | keyword | unsubscribe_link | admin ...
    source: Mapped[str | None] = mapped_column(String(255))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DoNotContact(Base):
    """The team's do-not-contact list: blocks every message to the address, transactional too."""

    __tablename__ = "msg_do_not_contact"
    __table_args__ = (UniqueConstraint("team_id", "channel", "address"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CapReservation(Base):
    """One send counted against a guest's frequency cap, reserved before the provider call.

    Reserved atomically per guest (row lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite) so the
    cap holds exactly with racing workers; deleted again when the send does not happen. A log
    of counts rather than linked data: no foreign keys, whose checks would cost two statements
    per send; deleting a guest deletes its rows, and `prasso prune` those past every window.
    """

    __tablename__ = "msg_cap_reservations"
    __table_args__ = (Index(None, "guest_id", "reserved_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    guest_id: Mapped[int] = mapped_column(BigId)
    delivery_id: Mapped[int] = mapped_column(BigId, unique=True)
    reserved_at: Mapped[datetime] = mapped_column(default=utcnow)


class PacingKey(Base):
    """The state of one pacing key (a channel, or a team's channel) for database-backed pacing.

    Slots form a ring of `ring_size` (the rate's limit) positions: slot `n` goes to position
    `n % ring_size`, whose previous occupant is exactly the slot `limit` places before it.
    """

    __tablename__ = "msg_pacing_keys"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    ring_size: Mapped[int] = mapped_column(Integer)
    issued: Mapped[int] = mapped_column(BigInteger, default=0)
    blocked_until: Mapped[float] = mapped_column(Float, default=0.0)  # unix seconds (a 429)


class PacingSlot(Base):
    """A handed-out send slot (unix seconds on the database clock) at its ring position."""

    __tablename__ = "msg_pacing_slots"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    slot_at: Mapped[float] = mapped_column(Float)


# --- templates -----------------------------------------------------------------------------------


class MessageTemplate(Timestamps, Base):
    """A team's named template; its content lives in versions, one per edit."""

    __tablename__ = "msg_templates"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(20))
    current_version: Mapped[int] = mapped_column(Integer, default=1)


class MessageTemplateVersion(Base):
    """One version of a template's subject and body, never changed once written."""

    __tablename__ = "msg_template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    template_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("msg_templates.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- messages and deliveries (the seed's tables) -------------------------------------------------


class Message(Timestamps, Base):
    __tablename__ = "msg_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("teams.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[str | None] = mapped_column(Text)
    is_transactional: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # ours: set by a cancel; a worker that claims one of its deliveries skips it `cancelled`
    cancelled_at: Mapped[datetime | None] = mapped_column()
    # ours: the template version the subject and body were copied from (every delivery of the
    # message used it), and the values of `{{name}}` tokens the send gave in `data`
    template_id: Mapped[int | None] = mapped_column(BigId)
    template_version: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # ours: created with a test token, its deliveries go to the simulator (docs/testing.md)
    is_test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # ours: a WhatsApp message's approved template for recipients outside the 24-hour window,
    # {"content_sid": "HX...", "variables": {"1": "{{FirstName}}", ...}}
    whatsapp_template: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # ours: the channels to try, in order, for a recipient this message's channel cannot reach
    fallback: Mapped[list[str] | None] = mapped_column(JSON)


_message_of = cast(Table, Message.__table__).alias("message_of")


class Delivery(Timestamps, Base):
    """A fan-out writes a million of these at once, so every index here is one a row written by
    it must pay for: the two that only sent deliveries need are partial, and `msg_message_id`
    has no foreign key (its check was a third of the fan-out's time; deliveries are only ever
    written for a message that exists, and messages are only deleted once they have none)."""

    __tablename__ = "msg_deliveries"
    __table_args__ = (
        Index(None, "msg_message_id", "status"),
        Index(
            None,
            "recipient_type",
            "recipient_id",
            "sent_at",
            postgresql_where=text("sent_at IS NOT NULL"),
            sqlite_where=text("sent_at IS NOT NULL"),
        ),
        Index(
            None,
            "provider_message_id",
            postgresql_where=text("provider_message_id IS NOT NULL"),
            sqlite_where=text("provider_message_id IS NOT NULL"),
        ),
        Index(
            "ix_msg_deliveries_queued",
            "id",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        Index(  # recent failures (`GET /api/deliveries?status=failed`): rows only once failed
            "ix_msg_deliveries_failed",
            "team_id",
            "id",
            postgresql_where=text("status = 'failed'"),
            sqlite_where=text("status = 'failed'"),
        ),
        Index(  # one fallback per delivery; partial: a fan-out's rows (NULL) never touch it
            "ux_msg_deliveries_fallback_of",
            "fallback_of",
            unique=True,
            postgresql_where=text("fallback_of IS NOT NULL"),
            sqlite_where=text("fallback_of IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int | None] = mapped_column(BigId, index=True)
    msg_message_id: Mapped[int] = mapped_column(BigId)
    recipient_type: Mapped[str] = mapped_column(String(255))
    recipient_id: Mapped[int] = mapped_column(BigId)
    channel: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(255), default="queued", server_default="queued")
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(String(40))  # ours: the code `error` starts with
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    sent_at: Mapped[datetime | None] = mapped_column()
    delivered_at: Mapped[datetime | None] = mapped_column()
    failed_at: Mapped[datetime | None] = mapped_column()
    # ours: attempts so far, schedule, and the lease of the worker holding it
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    send_at: Mapped[datetime | None] = mapped_column()
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    claimed_until: Mapped[datetime | None] = mapped_column()
    # ours: the delivery on an earlier channel of the message that this one replaces
    fallback_of: Mapped[int | None] = mapped_column(BigId)
    # the template version the delivery used: its message's, read with it rather than stored
    # in each of a million rows (from an alias, so a query that joins msg_messages itself
    # does not capture the subquery's table)
    template_id: Mapped[int | None] = column_property(
        select(_message_of.c.template_id)
        .where(_message_of.c.id == msg_message_id)
        .scalar_subquery()
    )
    template_version: Mapped[int | None] = column_property(
        select(_message_of.c.template_version)
        .where(_message_of.c.id == msg_message_id)
        .scalar_subquery()
    )
    is_test: Mapped[bool] = column_property(
        select(_message_of.c.is_test).where(_message_of.c.id == msg_message_id).scalar_subquery()
    )


class InboundMessage(Base):
    __tablename__ = "msg_inbound_messages"
    __table_args__ = (
        Index(None, "from_number", "received_at"),
        Index(None, "provider_message_id"),  # webhook retries are processed once
        Index(None, "team_id", "id"),  # a team's list, newest first
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("teams.id", ondelete="CASCADE"), index=True
    )
    from_number: Mapped[str] = mapped_column(String(32))
    to_number: Mapped[str] = mapped_column(String(32))
    # sms, or whatsapp: a WhatsApp message opens the sender's 24-hour window for free-form text
    channel: Mapped[str] = mapped_column(String(20), default="sms", server_default="sms")
    body: Mapped[str] = mapped_column(Text)
    keyword: Mapped[str | None] = mapped_column(String(20))
    provider_message_id: Mapped[str | None] = mapped_column(String(64))
    delivery_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("msg_deliveries.id", ondelete="SET NULL")
    )
    guest_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("guests.id", ondelete="SET NULL")
    )
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """The first answer to a request carrying an `Idempotency-Key`, replayed on repeats."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("team_id", "key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxMessage(Base):
    """What the `log` mail and SMS providers "sent": the local outbox."""

    __tablename__ = "outbox_messages"
    __table_args__ = (Index(None, "team_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int | None] = mapped_column(BigId)
    delivery_id: Mapped[int | None] = mapped_column(BigId)
    channel: Mapped[str] = mapped_column(String(20))
    to_address: Mapped[str] = mapped_column(String(255))
    from_address: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(255))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- queue ---------------------------------------------------------------------------------------


class Job(Base):
    """Jobs of the `database` queue driver (Laravel's shape, times as unix seconds).

    A reserved job has `reserved_at` set and `available_at` pushed to its lease expiry, so one
    index on (queue, available_at, id) serves both "ready" and "reservation expired".
    """

    __tablename__ = "jobs"
    __table_args__ = (Index(None, "queue", "available_at", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    queue: Mapped[str] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reserved_at: Mapped[float | None] = mapped_column(Float)
    reservation: Mapped[str | None] = mapped_column(String(32))
    available_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class FailedJob(Base):
    """Jobs that exhausted their attempts or failed permanently, whatever the driver."""

    __tablename__ = "failed_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    connection: Mapped[str] = mapped_column(String(40))
    queue: Mapped[str] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(Text)
    exception: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(default=utcnow)


class QueueWorker(Base):
    """A running worker, seen by `prasso queue status`, `/health` and `prasso doctor`.

    Inserted when the worker starts, updated at each heartbeat (its jobs counted in memory until
    then), deleted on a clean exit; `prasso queue restart` sets `restart_requested_at`.
    """

    __tablename__ = "queue_workers"
    __table_args__ = (Index(None, "last_seen_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(100))
    driver: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column()
    last_seen_at: Mapped[datetime] = mapped_column()
    jobs_done: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    restart_requested_at: Mapped[datetime | None] = mapped_column()


class ScheduledRun(Base):
    """The last run of a piece of housekeeping that one host does per period (the daily
    prune): taking a run is a conditional UPDATE of this row, so two hosts never both run it."""

    __tablename__ = "scheduled_runs"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    outcome: Mapped[str | None] = mapped_column(Text)


class WebhookEndpoint(Base):
    """A team's outbound webhook receiver: the events it subscribed to and the secret its
    requests are signed with (stored as is, since every request needs it; shown once)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index(None, "team_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[Any]] = mapped_column(JSON)  # event types, e.g. ["delivery.sent"]
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEvent(Base):
    """One event for one endpoint, and its delivery attempts so far (`webhook_events`)."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index(None, "endpoint_id", "id"),
        Index(None, "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


def table(model: type[Base]) -> Table:
    """The Core table of a model, typed for bulk statements."""
    return cast(Table, model.__table__)
