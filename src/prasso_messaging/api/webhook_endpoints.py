"""`/api/webhook-endpoints`: where a team's outbound webhook events go (docs/webhooks.md)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from prasso_messaging import webhook_endpoints
from prasso_messaging.api.deps import CurrentTeam, ResourceId, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import (
    Page,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointPublic,
)

router = APIRouter(
    prefix="/api/webhook-endpoints", tags=["webhook-endpoints"], dependencies=[checked_input]
)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create(
    body: WebhookEndpointCreate, team: CurrentTeam, runtime: RuntimeDep
) -> WebhookEndpointCreated:
    """Register an endpoint; the answer carries its signing `secret`, shown this once."""
    async with runtime.database.session() as session:
        endpoint = await webhook_endpoints.create_endpoint(
            session, team_id=team.id, url=body.url, events=body.events
        )
    return WebhookEndpointCreated.model_validate(endpoint)


@router.get("")
async def list_endpoints(team: CurrentTeam, runtime: RuntimeDep) -> Page[WebhookEndpointPublic]:
    """The team's endpoints, all on one page (without their secrets)."""
    async with runtime.database.session() as session:
        rows = await webhook_endpoints.list_endpoints(session, team_id=team.id)
    return Page(items=[WebhookEndpointPublic.model_validate(e) for e in rows], next_cursor=None)


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(endpoint_id: ResourceId, team: CurrentTeam, runtime: RuntimeDep) -> Response:
    """Remove the endpoint and its pending events."""
    async with runtime.database.session() as session:
        await webhook_endpoints.delete_endpoint(session, team_id=team.id, endpoint_id=endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
