"""Push: Web Push to every browser subscription of the user.

Without VAPID keys there is no provider and every push delivery is skipped `push_not_configured`.
A subscription the push service reports gone (404/410) is removed; when none is left to reach,
the delivery fails `subscription_expired`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Protocol

from prasso_messaging.channels.base import Channel
from prasso_messaging.domain import Outgoing, Recipient, Sent
from prasso_messaging.errors import DeliverySkipped, PermanentSendError, Reason, SendError
from prasso_messaging.providers.base import PushProvider, PushTarget, SubscriptionGone
from prasso_messaging.rendering import render_tokens

log = logging.getLogger(__name__)

PUSH_TTL_SECONDS = 24 * 3600
MAX_BODY_CHARACTERS = 1000  # push services accept ~4 KB of encrypted payload


class PushSubscriptionStore(Protocol):
    async def targets(self, *, user_id: int) -> list[PushTarget]: ...

    async def remove(self, *, user_id: int, endpoints: Sequence[str]) -> None: ...


def push_payload(outgoing: Outgoing) -> bytes:
    """The JSON a service worker receives in its `push` event (tokens rendered)."""
    title = render_tokens(outgoing.subject or outgoing.team.name, outgoing.tokens)
    body = render_tokens(outgoing.body, outgoing.tokens)
    if len(body) > MAX_BODY_CHARACTERS:
        body = body[: MAX_BODY_CHARACTERS - 1] + "…"
    document = {"title": title, "body": body, "delivery_id": outgoing.delivery_id}
    return json.dumps(document, ensure_ascii=False).encode()


class PushChannel(Channel):
    name = "push"
    recipient_kinds = ("user",)

    def __init__(
        self, provider: PushProvider | None, *, subscriptions: PushSubscriptionStore
    ) -> None:
        self.provider = provider
        self.subscriptions = subscriptions

    @property
    def provider_name(self) -> str | None:
        return self.provider.name if self.provider is not None else None

    def address(self, recipient: Recipient) -> str | None:
        return f"user:{recipient.id}"

    async def send(self, outgoing: Outgoing) -> Sent:
        if self.provider is None:
            raise DeliverySkipped(Reason.PUSH_NOT_CONFIGURED, "no VAPID keys are set")
        user_id = outgoing.recipient.id
        targets = await self.subscriptions.targets(user_id=user_id)
        if not targets:
            raise DeliverySkipped(Reason.MISSING_ADDRESS, "the user has no push subscription")
        payload = push_payload(outgoing)
        delivered: list[str] = []
        gone: list[str] = []
        errors: list[SendError] = []
        for target in targets:
            try:
                message_id = await self.provider.send(target, payload, ttl=PUSH_TTL_SECONDS)
            except SubscriptionGone:
                gone.append(target.endpoint)
            except SendError as exc:
                errors.append(exc)
            else:
                delivered.append(message_id or target.endpoint)
        if gone:
            await self.subscriptions.remove(user_id=user_id, endpoints=gone)
            log.info("push: removed %d expired subscription(s) of user %s", len(gone), user_id)
        if delivered:
            metadata = {"push_subscriptions": len(delivered), "push_expired": len(gone)}
            return Sent(provider_message_id=delivered[0][:255], metadata=metadata)
        if errors:
            transient = [e for e in errors if e.transient]
            raise transient[0] if transient else errors[0]
        raise PermanentSendError(
            Reason.SUBSCRIPTION_EXPIRED,
            f"all {len(gone)} push subscription(s) of the user expired (404/410) and were removed",
        )

    async def close(self) -> None:
        if self.provider is not None:
            await self.provider.close()
