"""Named templates per team (`/api/templates`): a channel, a subject and a body, and every edit
of the subject or body a new version. Versions are never changed, so a message created from
one (messages.py copies its subject and body) always says what that version said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.db.models import MessageTemplate, MessageTemplateVersion, utcnow
from prasso_messaging.errors import Conflict, NotFound, ValidationFailed
from prasso_messaging.message_content import validate_message
from prasso_messaging.teams import get_team

MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class TemplateView:
    """A template as the API shows it: one of its versions (by default the current one)."""

    id: int
    team_id: int
    name: str
    channel: str
    subject: str | None
    body: str
    version: int
    current_version: int
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, template: MessageTemplate, version: MessageTemplateVersion) -> TemplateView:
        return cls(
            id=template.id,
            team_id=template.team_id,
            name=template.name,
            channel=template.channel,
            subject=version.subject,
            body=version.body,
            version=version.version,
            current_version=template.current_version,
            created_at=template.created_at,
            updated_at=template.updated_at,
        )


def _clean_name(name: str | None) -> str:
    cleaned = (name or "").strip()
    if not cleaned:
        raise ValidationFailed("name", "must not be empty")
    if len(cleaned) > MAX_NAME_LENGTH or any(ord(c) < 32 for c in cleaned):
        raise ValidationFailed("name", f"one line of at most {MAX_NAME_LENGTH} characters")
    return cleaned


async def _name_taken(session: AsyncSession, team_id: int, name: str, but: int | None) -> None:
    query = select(MessageTemplate.id).where(
        MessageTemplate.team_id == team_id, MessageTemplate.name == name
    )
    if but is not None:
        query = query.where(MessageTemplate.id != but)
    existing = (await session.execute(query)).scalar_one_or_none()
    if existing is not None:
        raise Conflict("name", f"template {existing} already has this name", existing_id=existing)


async def create_template(
    session: AsyncSession,
    *,
    team_id: int,
    name: str | None,
    channel: str | None,
    subject: str | None,
    body: str | None,
) -> TemplateView:
    """A new template at version 1; a name the team already uses is a 409 naming it."""
    clean_name = _clean_name(name)
    kind, clean_subject, clean_body = validate_message(type=channel, subject=subject, body=body)
    await get_team(session, team_id)
    await _name_taken(session, team_id, clean_name, None)
    template = MessageTemplate(team_id=team_id, name=clean_name, channel=kind, current_version=1)
    session.add(template)
    await session.flush()
    version = MessageTemplateVersion(
        template_id=template.id, version=1, subject=clean_subject, body=clean_body
    )
    session.add(version)
    await session.flush()
    return TemplateView.of(template, version)


async def _template(session: AsyncSession, team_id: int, template_id: int) -> MessageTemplate:
    template = (
        await session.execute(
            select(MessageTemplate).where(
                MessageTemplate.id == template_id, MessageTemplate.team_id == team_id
            )
        )
    ).scalar_one_or_none()
    if template is None:
        raise NotFound(f"template {template_id} not found")
    return template


async def _version(
    session: AsyncSession, template: MessageTemplate, version: int | None
) -> MessageTemplateVersion:
    number = template.current_version if version is None else version
    found = (
        await session.execute(
            select(MessageTemplateVersion).where(
                MessageTemplateVersion.template_id == template.id,
                MessageTemplateVersion.version == number,
            )
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(
            f"template {template.id} has no version {number}"
            f" (versions 1 to {template.current_version})"
        )
    return found


async def get_template(
    session: AsyncSession, *, team_id: int, template_id: int, version: int | None = None
) -> TemplateView:
    """One of the team's templates at `version` (default: current); another team's is a 404."""
    template = await _template(session, team_id, template_id)
    return TemplateView.of(template, await _version(session, template, version))


async def list_templates(
    session: AsyncSession, *, team_id: int, after_id: int | None, limit: int
) -> list[TemplateView]:
    """The team's templates by id, each at its current version."""
    query = (
        select(MessageTemplate, MessageTemplateVersion)
        .join(
            MessageTemplateVersion,
            (MessageTemplateVersion.template_id == MessageTemplate.id)
            & (MessageTemplateVersion.version == MessageTemplate.current_version),
        )
        .where(MessageTemplate.team_id == team_id)
        .order_by(MessageTemplate.id)
        .limit(limit)
    )
    if after_id is not None:
        query = query.where(MessageTemplate.id > after_id)
    return [TemplateView.of(t, v) for t, v in (await session.execute(query)).all()]


async def update_template(
    session: AsyncSession, *, team_id: int, template_id: int, changes: Mapping[str, Any]
) -> TemplateView:
    """Rename, or change the subject or body (`changes` holds only the given fields; a null
    subject removes it): a changed subject or body is a new version, which becomes current.
    The channel stays what it was created with, since older versions were written for it."""
    template = await _template(session, team_id, template_id)
    if "channel" in changes and changes["channel"] != template.channel:
        raise ValidationFailed(
            "channel", f"a template keeps its channel ({template.channel}); create another one"
        )
    current = await _version(session, template, None)
    if "name" in changes:
        name = _clean_name(changes["name"])
        if name != template.name:
            await _name_taken(session, team_id, name, template.id)
            template.name = name
            template.updated_at = utcnow()
    subject = changes.get("subject", current.subject)
    body = changes.get("body", current.body)
    _, clean_subject, clean_body = validate_message(
        type=template.channel, subject=subject, body=body
    )
    if (clean_subject, clean_body) != (current.subject, current.body):
        template.current_version += 1
        template.updated_at = utcnow()
        current = MessageTemplateVersion(
            template_id=template.id,
            version=template.current_version,
            subject=clean_subject,
            body=clean_body,
        )
        session.add(current)
    await session.flush()
    return TemplateView.of(template, current)


async def template_content(
    session: AsyncSession, *, team_id: int, template_id: int, version: int | None
) -> TemplateView:
    """The version a message is created from: unknown template or version is a 422 naming
    the field (they are references in the message's body, not the resource asked for)."""
    try:
        template = await _template(session, team_id, template_id)
    except NotFound as exc:
        raise ValidationFailed("template_id", str(exc)) from None
    try:
        return TemplateView.of(template, await _version(session, template, version))
    except NotFound as exc:
        raise ValidationFailed("template_version", str(exc)) from None
