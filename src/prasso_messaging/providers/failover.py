"""Provider failover: a primary and a secondary provider, each behind its own circuit breaker.

A send goes to the primary unless its circuit is open. When the primary certainly did not take
the message (`ProviderDown`: no connection, a 5xx or an internal error), the same message goes
once through the secondary. Every other outcome stays with the provider that answered: a
permanent refusal (an invalid number) would be refused anywhere, a rate limit asks us to slow
down, and a send whose fate is unknown (`OutcomeUnknown`, or cut short by the worker's
`--timeout`) may have gone out, so it waits for the normal retry instead of risking two copies.

A circuit opens after `failures` consecutive failures (down, unknown or timed out); while open,
sends skip its provider without touching it. After `cooldown` seconds it half-opens: one send
probes the provider while the others still skip it; the probe's answer closes the circuit, its
failure opens it again. Each worker process keeps its own circuits (no shared state to fail).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from prasso_messaging.errors import Reason, SendError, TransientSendError
from prasso_messaging.metrics import circuit_changed, provider_call, provider_failover
from prasso_messaging.providers.base import (
    Accepted,
    Email,
    MailProvider,
    OutcomeUnknown,
    ProviderDown,
    Sms,
    SmsProvider,
)

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
DEFAULT_FAILURES = 5
DEFAULT_COOLDOWN_SECONDS = 30.0

Clock = Callable[[], float]


class CircuitBreaker:
    """closed → open after `failures` consecutive failures → half-open after `cooldown`
    seconds on `clock` (one probe) → closed on an answer, open again on a failure."""

    def __init__(
        self,
        provider: str,
        *,
        failures: int = DEFAULT_FAILURES,
        cooldown: float = DEFAULT_COOLDOWN_SECONDS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.provider = provider
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False

    def allow(self) -> bool:
        """Whether a send may go to the provider now; in half-open, only the one probe."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self.retry_in() > 0:
                return False
            self._enter(HALF_OPEN)
        if self.probing:
            return False
        self.probing = True
        return True

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self.clock())

    def succeeded(self) -> None:
        """The provider answered (taking the message or refusing it: either way it is up)."""
        if self.state == OPEN:  # a send from before it opened: the cooldown decides
            return
        self.failures = 0
        self.probing = False
        if self.state == HALF_OPEN:
            self._enter(CLOSED)

    def failed(self) -> None:
        if self.state == OPEN:
            return
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = self.clock()
            self.probing = False
            self._enter(OPEN)

    def _enter(self, state: str) -> None:
        self.state = state
        if state == CLOSED:
            self.failures = 0
        circuit_changed(self.provider, state)
        log.warning("%s circuit %s", self.provider, state.replace("_", "-"))


class _Provider(Protocol):
    name: str

    async def close(self) -> None: ...


P = TypeVar("P", bound=_Provider)


class FailoverRoute(Generic[P]):
    """Providers in order of preference, each with its circuit: `send` tries them in turn as
    far as failover allows."""

    def __init__(
        self,
        providers: Sequence[P],
        *,
        failures: int = DEFAULT_FAILURES,
        cooldown: float = DEFAULT_COOLDOWN_SECONDS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.providers = list(providers)
        self.breakers = [
            CircuitBreaker(p.name, failures=failures, cooldown=cooldown, clock=clock)
            for p in self.providers
        ]

    def set_clock(self, clock: Clock) -> None:
        for breaker in self.breakers:
            breaker.clock = clock

    async def send(self, call: Callable[[P], Awaitable[Accepted]]) -> Accepted:
        """`call` on the first provider that takes the message; raises the error that ends
        the attempt (retried later by the pipeline when transient)."""
        down: list[SendError] = []
        passed_over: str | None = None
        for provider, breaker in zip(self.providers, self.breakers, strict=True):
            if not breaker.allow():
                passed_over = passed_over or provider.name
                continue
            if passed_over is not None:
                provider_failover(passed_over, provider.name)
                log.warning("sending through %s instead of %s", provider.name, passed_over)
            try:
                with provider_call(provider.name):
                    accepted = await call(provider)
            except ProviderDown as exc:
                breaker.failed()
                down.append(exc)
                passed_over = provider.name
                continue
            except SendError as exc:  # it answered (a refusal), unless the outcome is unknown
                if isinstance(exc, OutcomeUnknown):
                    breaker.failed()
                else:
                    breaker.succeeded()
                raise
            except BaseException:  # timed out, cancelled, or broke: no answer from the provider
                breaker.failed()
                raise
            breaker.succeeded()
            return dataclasses.replace(accepted, provider=provider.name)
        if down:
            last = down[-1]
            detail = "; then ".join(e.detail or str(e) for e in down)
            raise ProviderDown(last.reason, detail, retry_after=last.retry_after)
        names = " and ".join(p.name for p in self.providers)
        wait = min(b.retry_in() for b in self.breakers)
        raise TransientSendError(
            Reason.PROVIDER_UNAVAILABLE, f"the circuits of {names} are open", retry_after=wait
        )

    async def close(self) -> None:
        for provider in self.providers:
            await provider.close()


class _Pair(Generic[P]):
    """A primary and a secondary behind one `FailoverRoute`; subclasses say how to send."""

    name = ""  # no metric name of its own: each provider is observed under its own name

    def __init__(
        self,
        primary: P,
        secondary: P,
        *,
        failures: int = DEFAULT_FAILURES,
        cooldown: float = DEFAULT_COOLDOWN_SECONDS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.primary = primary
        self.secondary = secondary
        self.route = FailoverRoute(
            [primary, secondary], failures=failures, cooldown=cooldown, clock=clock
        )

    async def close(self) -> None:
        await self.route.close()


class FailoverSms(_Pair[SmsProvider], SmsProvider):
    """SMS through `primary`, or through `secondary` when the primary is down."""

    async def send(self, sms: Sms) -> Accepted:
        return await self.route.send(lambda provider: provider.send(sms))


class FailoverMail(_Pair[MailProvider], MailProvider):
    """Mail through `primary`, or through `secondary` when the primary is down."""

    async def send(self, email: Email) -> Accepted:
        return await self.route.send(lambda provider: provider.send(email))
