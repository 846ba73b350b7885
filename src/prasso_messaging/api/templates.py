"""`/api/templates`: a team's named templates, every edit of their content a new version."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, status

from prasso_messaging import message_templates
from prasso_messaging.api.deps import CurrentTeam, ResourceId, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import Page, TemplateCreate, TemplatePublic, TemplateUpdate
from prasso_messaging.message_templates import TemplateView
from prasso_messaging.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, page

router = APIRouter(prefix="/api/templates", tags=["templates"], dependencies=[checked_input])


def _public(view: TemplateView) -> TemplatePublic:
    return TemplatePublic(**asdict(view))


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_template(
    body: TemplateCreate, team: CurrentTeam, runtime: RuntimeDep
) -> TemplatePublic:
    """A new template at version 1; a name the team already uses answers 409."""
    async with runtime.database.session() as session:
        view = await message_templates.create_template(
            session,
            team_id=team.id,
            name=body.name,
            channel=body.channel,
            subject=body.subject,
            body=body.body,
        )
    return _public(view)


@router.get("")
async def list_templates(
    team: CurrentTeam,
    runtime: RuntimeDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[TemplatePublic]:
    """The team's templates, each at its current version."""
    async with runtime.database.session() as session:
        rows = await message_templates.list_templates(
            session, team_id=team.id, after_id=decode_cursor(cursor), limit=limit + 1
        )
    items, next_cursor = page(rows, limit, key=lambda t: t.id)
    return Page(items=[_public(v) for v in items], next_cursor=next_cursor)


@router.get("/{template_id}")
async def get_template(
    template_id: ResourceId,
    team: CurrentTeam,
    runtime: RuntimeDep,
    version: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="An older version (default: current).")
    ] = None,
) -> TemplatePublic:
    """One template at its current version, or at an older `version`."""
    async with runtime.database.session() as session:
        view = await message_templates.get_template(
            session, team_id=team.id, template_id=template_id, version=version
        )
    return _public(view)


@router.patch("/{template_id}")
async def update_template(
    template_id: ResourceId, body: TemplateUpdate, team: CurrentTeam, runtime: RuntimeDep
) -> TemplatePublic:
    """Rename, or change the subject or body: a changed subject or body is a new version."""
    async with runtime.database.session() as session:
        view = await message_templates.update_template(
            session,
            team_id=team.id,
            template_id=template_id,
            changes=body.model_dump(exclude_unset=True),
        )
    return _public(view)
