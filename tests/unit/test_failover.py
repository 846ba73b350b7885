"""Circuit breakers and the failover route, on a hand-moved clock with scripted providers: which
failures hand a message to the next provider, and which never do."""

from __future__ import annotations

import asyncio

import pytest

from prasso_messaging.errors import PermanentSendError, Reason, TransientSendError
from prasso_messaging.providers.base import OutcomeUnknown, ProviderDown, Sms
from prasso_messaging.providers.failover import CircuitBreaker, FailoverSms
from tests.fakes import ScriptedSms

SMS = Sms(to="+12025550111", from_number="+15005550006", body="Hi", delivery_id=7)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def down() -> ProviderDown:
    return ProviderDown(Reason.PROVIDER_REJECTED, "answered 503")


def pair(
    primary: list[BaseException | float | None], secondary: list[BaseException | float | None]
) -> tuple[FailoverSms, ScriptedSms, ScriptedSms, Clock]:
    first, second, clock = ScriptedSms(primary), ScriptedSms(secondary), Clock()
    first.name, second.name = "first", "second"
    return FailoverSms(first, second, failures=2, cooldown=30, clock=clock), first, second, clock


def test_a_circuit_opens_after_consecutive_failures_and_probes_once_after_the_cooldown():
    clock = Clock()
    breaker = CircuitBreaker("twilio", failures=3, cooldown=30, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    breaker.succeeded()  # an answer in between: the failures were not consecutive
    for _ in range(2):
        breaker.failed()
    assert breaker.state == "closed"
    breaker.failed()
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_in() == 30

    clock.now = 29.9
    assert not breaker.allow()
    clock.now = 30
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # one probe at a time
    breaker.failed()  # the probe failed: open for another cooldown
    assert breaker.state == "open" and breaker.retry_in() == 30

    clock.now = 60
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_a_late_answer_of_a_send_from_before_the_circuit_opened_changes_nothing():
    breaker = CircuitBreaker("twilio", failures=1, cooldown=30, clock=Clock())
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert breaker.state == "open" and breaker.retry_in() == 30


async def test_a_provider_that_certainly_did_not_send_hands_the_message_over_once():
    provider, first, second, _ = pair([down()], [])
    accepted = await provider.send(SMS)
    assert accepted.provider == "second" and accepted.message_id == "FAKE1"
    assert (len(first.calls), len(second.calls)) == (1, 1)
    assert second.calls[0] == SMS


@pytest.mark.parametrize(
    "error",
    [
        OutcomeUnknown(Reason.PROVIDER_UNAVAILABLE, "connection lost after the request"),
        PermanentSendError(Reason.PROVIDER_REJECTED, "twilio 21211: invalid number"),
        TransientSendError(Reason.PROVIDER_REJECTED, "twilio 20429: too many requests"),
    ],
)
async def test_other_failures_stay_with_the_provider_that_answered(error):
    provider, first, second, _ = pair([error], [])
    with pytest.raises(type(error)):
        await provider.send(SMS)
    assert (len(first.calls), len(second.calls)) == (1, 0)
    expected = 1 if isinstance(error, OutcomeUnknown) else 0
    assert provider.route.breakers[0].failures == expected  # an answer is not a failure


async def test_a_send_cut_short_by_the_timeout_counts_against_the_circuit_only():
    provider, first, second, _ = pair([5.0], [])
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await provider.send(SMS)
    assert (len(first.calls), len(second.calls)) == (1, 0)
    assert provider.route.breakers[0].failures == 1


async def test_an_open_circuit_sends_straight_to_the_secondary_until_the_cooldown():
    provider, first, second, clock = pair([down(), down()], [])
    for _ in range(4):
        assert (await provider.send(SMS)).provider == "second"
    assert (len(first.calls), len(second.calls)) == (2, 4)

    clock.now = 30
    assert (await provider.send(SMS)).provider == "first"  # the probe, answered: closed
    assert (await provider.send(SMS)).provider == "first"
    assert provider.route.breakers[0].state == "closed"


async def test_with_both_down_the_error_says_both_and_nothing_is_sent_twice():
    provider, first, second, clock = pair([down()] * 2, [down()] * 2)
    for _ in range(2):
        with pytest.raises(ProviderDown, match="answered 503; then answered 503"):
            await provider.send(SMS)
    clock.now = 10  # both circuits open now: neither is touched
    with pytest.raises(TransientSendError, match="circuits of first and second are open") as e:
        await provider.send(SMS)
    assert e.value.retry_after == 20
    assert (len(first.calls), len(second.calls)) == (2, 2)


async def test_a_probe_that_breaks_opens_the_circuit_again_and_a_later_one_still_probes():
    provider, first, second, clock = pair([down(), down(), RuntimeError("a bug")], [])
    for _ in range(2):
        await provider.send(SMS)
    clock.now = 30
    with pytest.raises(RuntimeError):
        await provider.send(SMS)
    assert provider.route.breakers[0].state == "open"
    clock.now = 60
    assert (await provider.send(SMS)).provider == "first"
    assert (len(first.calls), len(second.calls)) == (4, 2)
