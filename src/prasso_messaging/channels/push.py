"""Push: Web Push to every browser subscription of the user, FCM to every app token of theirs.

Each device goes through the provider of its kind (`webpush` with VAPID keys, `fcm` with a service
account); with neither configured every push delivery is skipped `push_not_configured`, as it is
for a user whose devices are all of a kind that is not configured. A device the service reports
gone (Web Push 404/410, FCM UNREGISTERED) is removed; when none is left to reach, the delivery
fails `subscription_expired`. Each provider call is observed under its own name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from prasso_messaging.channels.base import Channel
from prasso_messaging.domain import Outgoing, Recipient, Sent
from prasso_messaging.errors import DeliverySkipped, PermanentSendError, Reason, SendError
from prasso_messaging.metrics import provider_call
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
        self, providers: Mapping[str, PushProvider], *, subscriptions: PushSubscriptionStore
    ) -> None:
        self.providers = dict(providers)  # by the kind of device they reach: webpush, fcm
        self.subscriptions = subscriptions

    def address(self, recipient: Recipient) -> str | None:
        return f"user:{recipient.id}"

    async def send(self, outgoing: Outgoing) -> Sent:
        if not self.providers:
            raise DeliverySkipped(
                Reason.PUSH_NOT_CONFIGURED, "no VAPID keys and no FCM credentials are set"
            )
        user_id = outgoing.recipient.id
        targets = await self.subscriptions.targets(user_id=user_id)
        if not targets:
            raise DeliverySkipped(Reason.MISSING_ADDRESS, "the user has no push subscription")
        reachable = [t for t in targets if t.kind in self.providers]
        if not reachable:
            kinds = ", ".join(sorted({t.kind for t in targets}))
            raise DeliverySkipped(
                Reason.PUSH_NOT_CONFIGURED, f"the user's devices need {kinds}, not configured"
            )
        payload = push_payload(outgoing)
        delivered: list[str] = []
        providers: set[str] = set()
        gone: list[str] = []
        errors: list[SendError] = []
        for target in reachable:
            provider = self.providers[target.kind]
            try:
                with provider_call(provider.name):
                    message_id = await provider.send(target, payload, ttl=PUSH_TTL_SECONDS)
            except SubscriptionGone:
                gone.append(target.endpoint)
            except SendError as exc:
                errors.append(exc)
            else:
                delivered.append(message_id or target.endpoint)
                providers.add(provider.name)
        if gone:
            await self.subscriptions.remove(user_id=user_id, endpoints=gone)
            log.info("push: removed %d expired subscription(s) of user %s", len(gone), user_id)
        if delivered:
            metadata = {
                "push_subscriptions": len(delivered),
                "push_expired": len(gone),
                "providers": sorted(providers),
            }
            return Sent(provider_message_id=delivered[0][:255], metadata=metadata)
        if errors:
            transient = [e for e in errors if e.transient]
            raise transient[0] if transient else errors[0]
        raise PermanentSendError(
            Reason.SUBSCRIPTION_EXPIRED,
            f"all {len(gone)} push subscription(s) of the user expired and were removed",
        )

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()
