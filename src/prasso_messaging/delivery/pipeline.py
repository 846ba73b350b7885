"""ProcessMsgDelivery: pace, claim, decide, render, send and record, a chunk at a time.

The worker hands each chunk of reserved jobs to a `DeliveryHandler`, which:
1. parses the payloads (a duplicate job of a delivery is acked together with it);
2. takes provider pacing slots per pacing key before claiming anything, so nothing is claimed
   only to be put back; a job whose slot lies further ahead waits in memory (briefly) or is
   released until then;
3. claims and loads the deliveries, decides each (compliance) and reserves the guests' caps,
   in one transaction of two statements;
4. sends concurrently (at most `--concurrency` at once), each at its slot, within `--timeout`,
   and only while its lease still covers the whole send;
5. records outcomes in flushes shared by every chunk in hand (every `FLUSH_SECONDS` or
   `FLUSH_ROWS`), then settles the jobs: a job is acked only after its outcome is committed.

Leases: a claim holds a delivery for `QUEUE_RETRY_AFTER` (longer only if the slot wait plus
`--timeout` needs it), the time the queue takes to hand a dead worker's job to another one, so a
killed worker's deliveries come back after `QUEUE_RETRY_AFTER`, as its jobs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.caps import CapRequest
from prasso_messaging.channels.base import Channel
from prasso_messaging.channels.whatsapp import window_open
from prasso_messaging.compliance import CANCELLED, Decision, counts_toward_cap, decide, over_cap
from prasso_messaging.db.models import utcnow
from prasso_messaging.delivery.job import RetryPolicy, parse_job
from prasso_messaging.delivery.policy import (
    PACED_CHANNELS,
    Limits,
    MessageBody,
    TeamPolicy,
    message_body,
    team_policy,
)
from prasso_messaging.delivery.repository import DeliveryRepository, Record
from prasso_messaging.domain import Outgoing, Recipient, Sent
from prasso_messaging.errors import DeliverySkipped, Reason, SendError
from prasso_messaging.failed_jobs import failed_job_row
from prasso_messaging.fallback import falls_back
from prasso_messaging.metrics import delivery_outcome, provider_call
from prasso_messaging.pacing import Rate, Slot
from prasso_messaging.providers.simulator import play_report
from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.queue.worker import JobResult, Settle, WorkerOptions

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.02
FLUSH_ROWS = 500
LEASE_MARGIN_SECONDS = 1.0  # a lease outlives the send's timeout by this much (the flush)
HOLD_SECONDS = 10.0  # a job may wait this long in memory for a pacing slot, else it is released
MISSED_SLOTS = 3  # slots missed in a row before a send is deferred instead
INITIAL_LATENESS_SECONDS = 0.02
LATENESS_DECAY = 0.95  # per paced send: a lateness peak is forgotten within a burst or two
MIN_TOLERANCE_SECONDS = 0.01
MAX_TOLERANCE_SECONDS = 0.5
TOLERANCE_FRACTION = 0.01
FLUSH_RETRIES = (0.2, 0.5, 1.0, 2.0, 4.0)  # a database hiccup must not lose sent outcomes


def pacing_horizon(rate: Rate) -> float:
    """How far ahead a slot may be taken: about one interval (at least 1 s, at most 2 s)."""
    return min(max(rate.spacing, 1.0), 2.0)


@dataclass(slots=True)
class _Item:
    """One delivery of a chunk, from its job to its outcome."""

    job: ReservedJob
    delivery_id: int
    channel: str | None
    team_id: int | None
    test: bool = False  # the payload's word before the claim, its message's after
    duplicates: list[ReservedJob] = field(default_factory=list)
    message_id: int | None = None  # known once claimed
    due: float = 0.0  # monotonic: not before its pacing slot
    latest: float = 0.0  # monotonic: the send must start by then, or its slot is spent
    pacing: tuple[str, Rate] | None = None
    attempt: int = 0
    lease_until: float = 0.0  # monotonic
    outgoing: Outgoing | None = None
    sender: Channel | None = None
    policy: TeamPolicy | None = None
    cap_reserved: bool = False
    permit: bool = False  # holds one of the worker's send permits
    webhooks: bool = False  # its team has webhook endpoints: the flush writes its events

    def results(self, action: str, delay: float = 0.0) -> list[JobResult]:
        """The job's result, and an ack for every duplicate of it."""
        first = JobResult(self.job, "release" if action == "release" else "ack", delay=delay)
        return [first, *(JobResult(d, "ack") for d in self.duplicates)]

    def log_fields(self, event: str, reason: str | None) -> dict[str, object]:
        """The structured fields of a log line about this delivery (`LOG_FORMAT=json`)."""
        return {
            "event": event,
            "delivery_id": self.delivery_id,
            "message_id": self.message_id,
            "team_id": self.team_id,
            "channel": self.channel,
            "reason": reason,
        }


class DeliveryPipeline:
    """What every worker of a process shares: the SQL, the channels, the rules and the caches."""

    def __init__(
        self,
        *,
        repository: DeliveryRepository,
        channels: Mapping[str, Channel],
        test_channels: Mapping[str, Channel],
        retry: RetryPolicy,
        limits: Limits,
        lease_seconds: float,
        connection_name: str,
    ) -> None:
        self.repository = repository
        self.channels = channels
        self.test_channels = test_channels  # the simulator's, for test messages
        self.retry = retry
        self.limits = limits
        self.lease_seconds = lease_seconds
        self.connection_name = connection_name  # the queue driver, as failed_jobs names it
        self.teams: dict[int, TeamPolicy] = {}
        self.messages: dict[int, MessageBody] = {}

    def handler(self, options: WorkerOptions) -> DeliveryHandler:
        """A job handler for one worker (its own send semaphore and flushes)."""
        return DeliveryHandler(self, options)

    async def load_teams(self, ids: Sequence[int], *, conn: AsyncConnection | None = None) -> None:
        for row in await self.repository.teams(ids, conn=conn):
            self.teams[row.id] = team_policy(row, self.limits)

    async def load_messages(
        self, ids: Sequence[int], *, conn: AsyncConnection | None = None
    ) -> None:
        for row in await self.repository.messages(ids, conn=conn):
            self.messages[row.id] = message_body(row)

    def pacing(self, channel: str | None, team_id: int | None) -> tuple[str, Rate] | None:
        """The slot ring and rate a send is paced by, or None when it is not paced."""
        if self.limits.pacer is None or channel not in PACED_CHANNELS or team_id is None:
            return None
        policy = self.teams.get(team_id)
        if policy is None:
            return None
        return policy.pacing_key(channel), policy.rate


class DeliveryHandler:
    def __init__(self, pipeline: DeliveryPipeline, options: WorkerOptions) -> None:
        self.pipeline = pipeline
        self.options = options
        self.max_attempts = options.tries or pipeline.retry.max_attempts
        self.permits = _Permits(max(1, options.concurrency))
        self.recorder = _Recorder(pipeline.repository)
        self.lateness = INITIAL_LATENESS_SECONDS  # recent peak of sends' lateness, decaying
        self.misses: dict[tuple[str, Rate], list[tuple[_Item, asyncio.Future[float | None]]]] = {}
        self.repacing: asyncio.Task[None] | None = None
        self.warm = False

    def tolerance(self, rate: Rate) -> float:
        """How late after its slot a paced send may start: a margin over recent lateness (a
        claim, a busy event loop), and at least 1 % of the interval. The ring spaces slots by
        it, which costs nothing while pacing does not bind and a little of the rate when it
        does; a slot missed on a slow rate (one send per minutes) costs a whole interval."""
        recent = min(MAX_TOLERANCE_SECONDS, max(MIN_TOLERANCE_SECONDS, 2 * self.lateness))
        return max(recent, rate.interval * TOLERANCE_FRACTION)

    async def __call__(self, jobs: Sequence[ReservedJob], settle: Settle) -> None:
        if not self.warm:
            await self._warm_up()
        items, malformed = self._parse(jobs)
        if malformed:
            await settle(malformed)
        await self._route(items, settle)
        pipeline = self.pipeline
        now: list[_Item] = []
        paced: dict[tuple[str, Rate], list[_Item]] = {}
        for item in items:
            # a test message's deliveries take no pacing slot: they reach no provider
            pacing = None if item.test else pipeline.pacing(item.channel, item.team_id)
            if pacing is None:
                now.append(item)
            else:
                paced.setdefault(pacing, []).append(item)
        # One claim for everything that may go now (its caps ranked in delivery order); what
        # must wait for a later slot is claimed when its slot comes.
        rounds = await asyncio.gather(*(self._pace(k, r, group) for (k, r), group in paced.items()))
        later: list[Awaitable[None]] = []
        for (key, rate), (granted, waiting, wait) in zip(paced, rounds, strict=True):
            now.extend(granted)
            if waiting:
                later.append(self._paced(key, rate, waiting, wait, settle))
        if now:
            later.append(self._claim_and_send(now, settle))
        await asyncio.gather(*later)

    async def drain(self) -> None:
        await self.recorder.drain()

    async def _warm_up(self) -> None:
        """Claim nothing once, before the first slot is taken: a cold claim (the connection
        opened, the statement compiled and prepared) would start the first paced sends after
        their slots' tolerance, and every slot they miss is a slot of the rate lost."""
        self.warm = True
        async with self.pipeline.repository.claiming() as claim:
            await claim.claim([0], now=utcnow(), lease=utcnow())

    # --- 1. payloads ------------------------------------------------------------------------

    def _parse(self, jobs: Sequence[ReservedJob]) -> tuple[list[_Item], list[JobResult]]:
        items: dict[int, _Item] = {}
        malformed: list[JobResult] = []
        for job in jobs:
            parsed = parse_job(job)
            if parsed is None:
                malformed.append(JobResult(job, "fail", error="malformed ProcessMsgDelivery job"))
            elif parsed.delivery_id in items:
                items[parsed.delivery_id].duplicates.append(job)
            else:
                items[parsed.delivery_id] = _Item(
                    job, parsed.delivery_id, parsed.channel, parsed.team_id, parsed.test
                )
        return list(items.values()), malformed

    async def _route(self, items: list[_Item], settle: Settle) -> None:
        """Fill in channel and team for payloads of older versions; load unknown teams."""
        pipeline = self.pipeline
        unrouted = [i for i in items if i.channel is None or i.team_id is None]
        if unrouted:
            routes = await pipeline.repository.routes([i.delivery_id for i in unrouted])
            gone = [i for i in unrouted if i.delivery_id not in routes]
            for item in unrouted:
                item.channel, item.team_id = routes.get(item.delivery_id, (None, None))
            if gone:
                await settle([r for i in gone for r in i.results("ack")])
                for item in gone:
                    items.remove(item)
        unknown = {i.team_id for i in items if i.team_id is not None} - pipeline.teams.keys()
        if unknown:
            await pipeline.load_teams(sorted(unknown))

    # --- 2. pacing ----------------------------------------------------------------------------

    async def _pace(
        self, key: str, rate: Rate, items: list[_Item]
    ) -> tuple[list[_Item], list[_Item], float | None]:
        """Slots for as many items as there are free send permits: (granted, the rest, how long
        until the first refused one's slot, or None when only permits ran out).

        Permits are taken before the slots, so a paced send never queues behind other sends
        past its slot. Its claim and a busy event loop still make it start a little after the
        slot: the ring spaces slots by that lateness (`tolerance`), so it crowds no window.
        """
        permits = await self.permits.take(len(items))
        tolerance = self.tolerance(rate)
        slots = await self._take_slots(key, rate, permits, pacing_horizon(rate), tolerance)
        answered = time.monotonic()
        granted = [item for item, slot in zip(items, slots, strict=False) if slot.granted]
        self.permits.give(permits - len(granted))
        for item, slot in zip(granted, slots, strict=False):
            item.pacing = (key, rate)
            item.permit = True
            _schedule(item, slot, answered, tolerance)
        wait = slots[len(granted)].wait if len(granted) < permits else None
        return granted, items[len(granted) :], wait

    async def _paced(
        self, key: str, rate: Rate, waiting: list[_Item], wait: float | None, settle: Settle
    ) -> None:
        """Claim and send the waiting items as their slots come; hold them in memory while the
        wait is short, else release them until about their turn."""
        horizon = pacing_horizon(rate)
        hold = min(HOLD_SECONDS, self.pipeline.lease_seconds / 2)
        sending: list[asyncio.Task[None]] = []
        while waiting:
            if wait is not None and wait > hold:
                delay = max(0.001, wait - horizon / 2)
                now = utcnow()
                await self.pipeline.repository.postpone(
                    [i.delivery_id for i in waiting], now=now, until=now + timedelta(seconds=delay)
                )
                await settle([r for i in waiting for r in i.results("release", delay)])
                break
            if wait is not None:
                await asyncio.sleep(max(0.0, wait - horizon / 2))
            granted, waiting, wait = await self._pace(key, rate, waiting)
            if granted:
                sending.append(asyncio.create_task(self._claim_and_send(granted, settle)))
        await asyncio.gather(*sending)

    async def _take_slots(
        self, key: str, rate: Rate, count: int, horizon: float, tolerance: float
    ) -> list[Slot]:
        pacer = self.pipeline.limits.pacer
        assert pacer is not None
        try:
            return await pacer.acquire_many(key, rate, count, max_wait=horizon, tolerance=tolerance)
        except Exception:  # the pacing store is down: wait, never send unpaced
            log.exception("pacing store unavailable for %s", key)
            return [Slot(False, HOLD_SECONDS * 2, 0.0)] * count

    # --- 3. claim, decide, reserve caps ---------------------------------------------------------

    async def _claim_and_send(self, items: list[_Item], settle: Settle) -> None:
        pipeline = self.pipeline
        now = utcnow()
        started = time.monotonic()
        ahead = max((i.due - started for i in items), default=0.0)
        lease = max(pipeline.lease_seconds, ahead + self.options.timeout + LEASE_MARGIN_SECONDS)
        by_id = {item.delivery_id: item for item in items}
        sends: list[_Item] = []
        # Outcomes decided here are handed to the recorder only once the claim has committed:
        # its flush runs on another connection, where an uncommitted claim is not yet seen.
        decided: list[Callable[[], asyncio.Future[None]]] = []
        async with pipeline.repository.claiming() as claim:
            rows = await claim.claim(list(by_id), now=now, lease=now + timedelta(seconds=lease))
            await self._refresh(rows, claim.conn)
            requests: list[CapRequest] = []
            for row in rows:
                item = by_id[row.delivery_id]
                item.attempt = row.attempts
                item.lease_until = started + lease
                item.webhooks = bool(row.webhooks)
                decision = self._decide(item, row, now)
                if decision.action == "send":
                    sends.append(item)
                    request = self._cap_request(item)
                    if request is not None:
                        requests.append(request)
                elif decision.action == "defer":
                    assert decision.not_before is not None
                    wait = (decision.not_before - now).total_seconds()
                    decided.append(partial(self._defer, item, wait, settle))
                else:
                    decided.append(
                        partial(self._skip, item, decision.reason, decision.error, settle)
                    )
            if requests:
                granted = await claim.reserve_caps(requests, now=now)
                for item in list(sends):
                    if item.policy is None or not self._capped(item):
                        continue
                    if item.delivery_id in granted:
                        item.cap_reserved = True
                    else:
                        sends.remove(item)
                        denied = over_cap(item.policy.cap, item.policy.window_days)
                        decided.append(
                            partial(self._skip, item, denied.reason, denied.error, settle)
                        )
        flushed = [outcome() for outcome in decided]
        unclaimed = [item for item in items if item.attempt == 0]
        if unclaimed:
            await self._settle_unclaimed(unclaimed, now, settle)
        sending = set(map(id, sends))
        self.permits.give(sum(1 for i in items if i.permit and id(i) not in sending))
        deferred = await self._pace_again_if_late(sends, settle)
        flushed.extend(deferred)
        sends = [item for item in sends if item.pacing is None or item.due >= 0]
        flushed.extend(await asyncio.gather(*(self._send(item, settle) for item in sends)))
        await asyncio.gather(*flushed)

    async def _pace_again_if_late(
        self, items: list[_Item], settle: Settle
    ) -> list[asyncio.Future[None]]:
        """The claim outlasted the slots' tolerance (a cold start, a slow database): new slots
        for the whole batch in one request per key, rather than one per send as each finds its
        slot missed. Items with no slot near are deferred (their `due` set to -1)."""
        late: dict[tuple[str, Rate], list[_Item]] = {}
        now = time.monotonic()
        for item in items:
            if item.pacing is not None and now > item.latest:
                late.setdefault(item.pacing, []).append(item)
        deferred: list[asyncio.Future[None]] = []
        for group in late.values():
            for item, refused in zip(group, await self._pace_again(group), strict=True):
                if refused is not None:
                    deferred.append(self._defer(item, refused, settle, pacing=True))
                    item.due = -1.0
                    self.permits.give(1)
        return deferred

    async def _refresh(self, rows: Sequence[Any], conn: AsyncConnection) -> None:
        """Reload the teams and messages whose rows changed since this worker last saw them."""
        pipeline = self.pipeline
        teams: set[int] = set()
        messages: set[int] = set()
        for row in rows:
            policy = pipeline.teams.get(row.team_id)
            if row.team_id is not None and (
                policy is None or policy.version != (row.team_version, row.settings_version)
            ):
                teams.add(row.team_id)
            body = pipeline.messages.get(row.message_id)
            if body is None or body.version != row.message_version:
                messages.add(row.message_id)
        if teams:
            await pipeline.load_teams(sorted(teams), conn=conn)
        if messages:
            await pipeline.load_messages(sorted(messages), conn=conn)

    def _decide(self, item: _Item, row: Any, now: datetime) -> Decision:
        pipeline = self.pipeline
        item.policy = pipeline.teams.get(row.team_id)
        item.message_id = row.message_id
        message = pipeline.messages.get(row.message_id)
        item.test = message is not None and message.test
        item.sender = (pipeline.test_channels if item.test else pipeline.channels).get(row.channel)
        if row.found_id is None or item.policy is None or message is None:
            return Decision("skip", Reason.RECIPIENT_NOT_FOUND, "the recipient was deleted")
        if row.message_cancelled_at is not None:  # claimed after the cancel (cancellation.py)
            return CANCELLED
        if item.sender is None:
            return Decision("skip", Reason.CHANNEL_UNSUPPORTED, "no such channel")
        if row.recipient_type == "user":
            recipient = Recipient(
                "user", row.recipient_id, None, None, row.name, row.email, row.phone
            )
        else:
            recipient = Recipient(
                "guest",
                row.recipient_id,
                row.first_name,
                row.last_name,
                None,
                row.email,
                row.phone,
                bool(row.subscribed),
                row.fields or {},
            )
        in_window = row.channel == "whatsapp" and window_open(row.last_inbound_at, now)
        item.outgoing = Outgoing(
            row.delivery_id,
            row.channel,
            message.subject,
            message.body,
            message.transactional,
            recipient,
            item.policy.profile,
            message.data,
            None if in_window else message.whatsapp_template,
        )
        return decide(
            item.outgoing,
            address=item.sender.address(recipient),
            recipient_kinds=item.sender.recipient_kinds,
            opted_out=bool(row.opted_out),
            do_not_contact=bool(row.do_not_contact),
            now=now,
            quiet_hours=item.policy.quiet_hours,
            opted_in=bool(row.opted_in),
            window_open=in_window,
        )

    def _capped(self, item: _Item) -> bool:
        """Whether the send counts toward the guest's cap: a test send never does."""
        assert item.outgoing is not None
        if item.test:
            return False
        bypass = self.pipeline.limits.transactional_bypass
        return counts_toward_cap(item.outgoing, transactional_bypass=bypass)

    def _cap_request(self, item: _Item) -> CapRequest | None:
        if item.policy is None or item.outgoing is None or not self._capped(item):
            return None
        policy = item.policy
        return CapRequest(
            item.delivery_id, item.outgoing.recipient.id, policy.cap, policy.window_days
        )

    async def _settle_unclaimed(self, items: list[_Item], now: datetime, settle: Settle) -> None:
        """Jobs whose delivery is done (ack) or not due / leased elsewhere (back until then)."""
        states = await self.pipeline.repository.states([i.delivery_id for i in items])
        results: list[JobResult] = []
        for item in items:
            state = states.get(item.delivery_id)
            if state is None or state.status != "queued":
                results.extend(item.results("ack"))
            else:
                due = (state.due - now).total_seconds() if state.due else 0.0
                results.extend(item.results("release", max(0.05, due + 0.05)))
        await settle(results)

    # --- 4. send --------------------------------------------------------------------------------

    async def _send(self, item: _Item, settle: Settle) -> asyncio.Future[None]:
        if not item.permit:
            await self.permits.take(1)
            item.permit = True
        try:
            return await self._send_with_permit(item, settle)
        finally:
            self.permits.give(1)

    async def _send_with_permit(self, item: _Item, settle: Settle) -> asyncio.Future[None]:
        assert item.outgoing is not None and item.sender is not None
        timeout = self.options.timeout
        short = item.lease_until - max(item.due, time.monotonic()) < timeout + LEASE_MARGIN_SECONDS
        if short and not await self._extend_lease(item):  # another worker took over
            return self.recorder.settled(item.results("ack"), settle)
        wait = await self._wait_for_slot(item)
        if wait is not None:
            return self._defer(item, wait, settle, pacing=True)
        try:
            sent = await self._timed_send(item)
        except DeliverySkipped as exc:
            return self._skip(item, exc.reason, str(exc), settle)
        except SendError as exc:
            log.warning(
                "%s send error: %s (delivery %s, attempt %d)",
                "SMS" if item.channel == "sms" else item.channel,
                exc.reason,
                item.delivery_id,
                item.attempt,
                extra=item.log_fields("send_error", exc.reason),
            )
            if not exc.transient:
                return self._fail(item, exc.reason, str(exc), settle)
            if exc.retry_after:
                await self._slow_down(item, exc.retry_after)
            return self._retry(item, exc.reason, str(exc), settle, exc.retry_after)
        except TimeoutError:
            error = f"{Reason.TIMED_OUT}: no answer within {timeout:g}s"
            return self._retry(item, Reason.TIMED_OUT, error, settle)
        except Exception as exc:  # an unexpected error is retried, never lost
            log.exception("delivery %s: unexpected error", item.delivery_id)
            return self._retry(item, None, f"error: {exc!r}", settle)
        return self._sent(item, sent, settle)

    async def _timed_send(self, item: _Item) -> Sent:
        """The channel's send within `--timeout`, its time observed by provider and outcome;
        a channel without a provider of its own (in-app), or one that observes each of its
        providers itself (failover, push), is not observed here."""
        assert item.outgoing is not None and item.sender is not None
        provider = item.sender.provider_name
        async with asyncio.timeout(self.options.timeout):
            if provider is None:
                return await item.sender.send(item.outgoing)
            with provider_call(provider):
                return await item.sender.send(item.outgoing)

    async def _wait_for_slot(self, item: _Item) -> float | None:
        """Sleep until the item's slot, taking a new one for a slot overslept (a stalled
        process, many sends due at once). Returns how long to defer instead when no slot is
        near, or when slots keep being missed (a process too loaded to keep its pace)."""
        if item.pacing is None:
            return None
        for _ in range(MISSED_SLOTS):
            ahead = item.due - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            woke = time.monotonic()
            self.lateness = max(woke - item.due, self.lateness * LATENESS_DECAY)
            if woke <= item.latest:
                return None
            log.debug("delivery %s: missed its pacing slot, pacing again", item.delivery_id)
            [refused] = await self._pace_again([item])
            if refused is not None:
                return refused
        return item.pacing[1].interval

    async def _pace_again(self, items: list[_Item]) -> list[float | None]:
        """New slots for items that missed theirs, in one request per key for all the misses
        of this turn of the event loop (sends due together miss together). For each item: None
        when it got a slot (and is rescheduled), else how long until one would be free."""
        loop = asyncio.get_running_loop()
        answers: list[asyncio.Future[float | None]] = [loop.create_future() for _ in items]
        for item, answer in zip(items, answers, strict=True):
            assert item.pacing is not None
            self.misses.setdefault(item.pacing, []).append((item, answer))
        if self.repacing is None or self.repacing.done():
            self.repacing = asyncio.create_task(self._pace_misses())
        return list(await asyncio.gather(*answers))

    async def _pace_misses(self) -> None:
        await asyncio.sleep(0)  # let the other sends woken in this turn report their misses
        while self.misses:
            misses, self.misses = self.misses, {}
            for (key, rate), waiting in misses.items():
                tolerance = self.tolerance(rate)
                slots = await self._take_slots(
                    key, rate, len(waiting), pacing_horizon(rate), tolerance
                )
                answered = time.monotonic()
                for (item, answer), slot in zip(waiting, slots, strict=True):
                    if slot.granted:
                        _schedule(item, slot, answered, tolerance)
                    answer.set_result(None if slot.granted else slot.wait)

    async def _extend_lease(self, item: _Item) -> bool:
        lease = max(self.pipeline.lease_seconds, self.options.timeout + LEASE_MARGIN_SECONDS)
        now = utcnow()
        kept = await self.pipeline.repository.extend_leases(
            [(item.delivery_id, item.attempt)], now=now, until=now + timedelta(seconds=lease)
        )
        item.lease_until = time.monotonic() + lease
        return item.delivery_id in kept

    async def _slow_down(self, item: _Item, seconds: float) -> None:
        """The provider said 429 with Retry-After: no send on this key until it has passed."""
        pacer = self.pipeline.limits.pacer
        if item.pacing is None or pacer is None:
            return
        key, rate = item.pacing
        try:
            await pacer.block(key, rate, seconds)
        except Exception:
            log.exception("delivery %s: could not slow the channel down", item.delivery_id)

    # --- 5. outcomes ------------------------------------------------------------------------

    def _record(
        self,
        item: _Item,
        record: Record,
        settle: Settle,
        action: str,
        delay: float = 0.0,
        *,
        counted_as: tuple[str, str | None] | None = None,
    ) -> asyncio.Future[None]:
        """Queue the outcome for the next flush; once committed, it is counted under
        `counted_as` (status, reason), by default the record's own."""
        status, reason = counted_as or (record.status, record.reason)
        outcome = (item.channel, status, reason)
        return self.recorder.add(record, item.results(action, delay), settle, outcome)

    def _sent(self, item: _Item, sent: Sent, settle: Settle) -> asyncio.Future[None]:
        now = utcnow()
        record = Record(
            item.delivery_id,
            item.attempt,
            sent.status,
            provider_message_id=sent.provider_message_id,
            sent_at=now,
            delivered_at=now if sent.status == "delivered" else None,
            metadata=sent.metadata,
            outbox=sent.outbox,
            webhooks=item.webhooks,
        )
        recorded = self._record(item, record, settle, "ack")
        if item.test and sent.provider_message_id is not None:
            played = self._play_report(item, sent.provider_message_id, recorded)
            return asyncio.ensure_future(played)
        return recorded

    async def _play_report(self, item: _Item, message_id: str, recorded: Awaitable[None]) -> None:
        """A test send's later report (receipt, bounce), played once the send is recorded."""
        await recorded
        assert item.outgoing is not None and item.sender is not None
        address = item.sender.address(item.outgoing.recipient)
        try:
            await play_report(
                self.pipeline.repository.database,
                channel=item.outgoing.channel,
                address=address,
                provider_message_id=message_id,
            )
        except Exception:  # the send is recorded; a lost simulated report must not undo it
            log.exception("delivery %s: could not play the simulated report", item.delivery_id)

    def _falls_back(self, item: _Item, reason: str | None) -> bool:
        """Whether the outcome leads to a fallback delivery (its message names a next channel
        and `reason` is one to fall back for): only then does the flush write one."""
        message = self.pipeline.messages.get(item.message_id) if item.message_id else None
        return message is not None and falls_back(message.fallback, item.channel, reason)

    def _skip(
        self, item: _Item, reason: Reason | None, error: str | None, settle: Settle
    ) -> asyncio.Future[None]:
        record = Record(
            item.delivery_id,
            item.attempt,
            "skipped",
            reason=reason,
            error=error,
            release_cap=item.cap_reserved,
            webhooks=item.webhooks,
            fallback=self._falls_back(item, reason),
        )
        log.info(
            "delivery %s skipped: %s",
            item.delivery_id,
            reason,
            extra=item.log_fields("delivery_skipped", reason),
        )
        return self._record(item, record, settle, "ack")

    def _defer(
        self, item: _Item, wait: float, settle: Settle, *, pacing: bool = False
    ) -> asyncio.Future[None]:
        """Back to `queued` until `wait` has passed, the attempt not counted; job released."""
        wait = max(0.001, wait)
        record = Record(
            item.delivery_id,
            item.attempt,
            "queued",
            next_attempt_at=utcnow() + timedelta(seconds=wait),
            undo_attempt=True,
            release_cap=item.cap_reserved,
        )
        why = "pacing" if pacing else "quiet_hours"
        log.debug("delivery %s: %s, waits %.3fs", item.delivery_id, why, wait)
        return self._record(item, record, settle, "release", wait, counted_as=("deferred", why))

    def _retry(
        self,
        item: _Item,
        reason: Reason | None,
        error: str,
        settle: Settle,
        retry_after: float | None = None,
    ) -> asyncio.Future[None]:
        if item.attempt >= self.max_attempts:
            detail = f"after {item.attempt} attempts, last: {error}"
            return self._fail(
                item, Reason.RETRIES_EXHAUSTED, f"{Reason.RETRIES_EXHAUSTED}: {detail}", settle
            )
        delay = max(self.pipeline.retry.delay_after(item.attempt), retry_after or 0.0)
        record = Record(
            item.delivery_id,
            item.attempt,
            "queued",
            reason=reason,
            error=error,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
            release_cap=item.cap_reserved,
        )
        log.info(
            "delivery %s: attempt %d failed, retry in %.0fs",
            item.delivery_id,
            item.attempt,
            delay,
            extra=item.log_fields("delivery_retry", reason),
        )
        return self._record(item, record, settle, "release", delay, counted_as=("retried", reason))

    def _fail(
        self, item: _Item, reason: Reason, error: str, settle: Settle
    ) -> asyncio.Future[None]:
        record = Record(
            item.delivery_id,
            item.attempt,
            "failed",
            reason=reason,
            error=error,
            failed_at=utcnow(),
            release_cap=item.cap_reserved,
            # committed with the delivery's `failed`: a crash can never separate the two
            failed_job=failed_job_row(
                connection=self.pipeline.connection_name, job=item.job, exception=error
            ),
            webhooks=item.webhooks,
            fallback=self._falls_back(item, reason),
        )
        log.warning(
            "delivery %s failed: %s",
            item.delivery_id,
            error,
            extra=item.log_fields("delivery_failed", reason),
        )
        return self._record(item, record, settle, "ack")


def _schedule(item: _Item, slot: Slot, answered: float, tolerance: float) -> None:
    """When to send: the store read its clock at most `round_trip` before the answer arrived,
    so the slot lies between `answered - round_trip + wait` and `answered + wait`: never send
    before the later bound, and no later than the tolerance (plus half the guard, for the
    network) after the earlier one: later, it could crowd the window of the send `limit`
    slots after it."""
    assert item.pacing is not None
    item.due = answered + slot.wait
    earliest = answered - slot.round_trip + slot.wait
    item.latest = earliest + tolerance + item.pacing[1].guard / 2


class _Permits:
    """A worker's send permits (`--concurrency`): taken one at a time, or several at once for
    the sends of one pacing request."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._freed = asyncio.Event()

    async def take(self, most: int) -> int:
        """At least one permit and at most `most`, as many as are free."""
        while self.free <= 0:
            self._freed.clear()
            await self._freed.wait()
        taken = min(most, self.free)
        self.free -= taken
        return taken

    def give(self, count: int) -> None:
        if count:
            self.free += count
            self._freed.set()


Outcome = tuple[str | None, str, str | None]
"""How a recorded outcome is counted: channel, status, reason (`metrics.delivery_outcome`)."""


@dataclass
class _Pending:
    record: Record | None
    results: list[JobResult]
    settle: Settle
    done: asyncio.Future[None]
    outcome: Outcome | None = None


class _Recorder:
    """Writes outcomes in shared flushes, then settles their jobs (never before the commit)."""

    def __init__(self, repository: DeliveryRepository) -> None:
        self.repository = repository
        self.pending: list[_Pending] = []
        self.full = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(
        self, record: Record, results: list[JobResult], settle: Settle, outcome: Outcome
    ) -> asyncio.Future[None]:
        return self._queue(record, results, settle, outcome)

    def settled(self, results: list[JobResult], settle: Settle) -> asyncio.Future[None]:
        """Jobs to settle with the next flush, with nothing to write."""
        return self._queue(None, results, settle)

    def _queue(
        self,
        record: Record | None,
        results: list[JobResult],
        settle: Settle,
        outcome: Outcome | None = None,
    ) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(record, results, settle, done, outcome))
        if len(self.pending) >= FLUSH_ROWS:
            self.full.set()
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        return done

    async def drain(self) -> None:
        while self.task is not None and not self.task.done():
            self.full.set()
            await asyncio.shield(self.task)

    async def _run(self) -> None:
        while self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.full.wait(), FLUSH_SECONDS)
            self.full.clear()
            batch, self.pending = self.pending, []
            try:
                await self._write([p.record for p in batch if p.record is not None])
            except Exception as exc:
                for pending in batch:
                    pending.done.set_exception(exc)
                continue
            for pending in batch:
                if pending.outcome is not None:
                    delivery_outcome(*pending.outcome)
            by_settle: dict[Settle, list[JobResult]] = {}
            for pending in batch:
                by_settle.setdefault(pending.settle, []).extend(pending.results)
            for settle, results in by_settle.items():
                await settle(results)
            for pending in batch:
                pending.done.set_result(None)

    async def _write(self, records: list[Record]) -> None:
        if not records:
            return
        for pause in (*FLUSH_RETRIES, None):
            try:
                await self.repository.record(records, now=utcnow())
                return
            except Exception:
                if pause is None:
                    log.exception("could not record %d delivery outcome(s)", len(records))
                    raise
                log.warning("recording %d outcome(s) failed; again in %gs", len(records), pause)
                await asyncio.sleep(pause)
