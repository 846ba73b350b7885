"""The ProcessMsgDelivery job: claim a batch, decide, render, send, record.

Every state change is a conditional UPDATE, so a duplicate or late job is a no-op:
- claim: `status = 'queued'` and no live lease → lease for `timeout + margin`, attempts + 1;
- record: `status = 'queued'` → sent / delivered / skipped / failed, or back to waiting with
  `next_attempt_at` after a transient error.
Results are written as sends complete (coalesced while a write is in flight), which keeps the
window between "provider accepted" and "we recorded it" to one write.

Between claim and send: `compliance.decide` (send, wait for quiet hours, or skip), the per-guest
cap reservation for the whole batch, and a provider pacing slot per send. Waiting work (quiet
hours, a pacing slot further off than one interval) goes back to `queued` with `next_attempt_at`,
its attempt not counted, and its job is released with that delay: it waits, it is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.channels.base import Channel, Outgoing, Recipient, Sent, TeamProfile
from prasso_messaging.compliance import (
    ConsentSnapshot,
    Decision,
    QuietHours,
    counts_toward_cap,
    decide,
    load_consent,
    over_cap,
)
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import (
    Delivery,
    Guest,
    Message,
    Team,
    TeamSettings,
    User,
    table,
    utcnow,
)
from prasso_messaging.errors import DeliverySkipped, Reason, SendError, ValidationFailed
from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.queue.failed import failed_job_row, failed_jobs
from prasso_messaging.queue.worker import JobResult, WorkerOptions
from prasso_messaging.ratelimit import (
    CapRequest,
    Limits,
    Rate,
    Slot,
    release_caps,
    reserve_caps,
)

log = logging.getLogger(__name__)

JOB_NAME = "ProcessMsgDelivery"
LEASE_MARGIN_SECONDS = 30.0
PACED_CHANNELS = ("email", "sms", "push")  # in-app is our own table, no provider to pace
MAX_PACING_SLEEP_SECONDS = 2.0  # a later slot releases the job instead of holding the batch
deliveries = table(Delivery)


def delivery_job(delivery_id: int) -> dict[str, Any]:
    """The queue payload of one delivery: the delivery row is the source of truth."""
    return {"job": JOB_NAME, "delivery_id": delivery_id}


@dataclass(frozen=True)
class RetryPolicy:
    backoff: tuple[float, ...]

    @property
    def max_attempts(self) -> int:
        return len(self.backoff) + 1

    def delay_after(self, attempt: int) -> float:
        if not self.backoff:
            return 0.0
        return self.backoff[min(attempt, len(self.backoff)) - 1]


@dataclass
class _Record:
    """One delivery's outcome, as the parameters of the recording UPDATE."""

    delivery_id: int
    status: str
    error: str | None = None
    provider_message_id: str | None = None
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    failed_at: datetime | None = None
    next_attempt_at: datetime | None = None
    metadata: dict[str, Any] | None = None
    undo_attempt: bool = False  # a deferral (quiet hours, pacing) is not an attempt
    release_cap: bool = False  # give the guest's cap room back: nothing was sent
    failed_job: ReservedJob | None = None  # recorded in failed_jobs with the same commit

    def params(self, now: datetime) -> dict[str, Any]:
        return {
            "b_id": self.delivery_id,
            "b_status": self.status,
            "b_error": self.error,
            "b_pmid": self.provider_message_id,
            "b_sent_at": self.sent_at,
            "b_delivered_at": self.delivered_at,
            "b_failed_at": self.failed_at,
            "b_next": self.next_attempt_at,
            "b_meta": self.metadata,
            "b_undo": 1 if self.undo_attempt else 0,
            "b_now": now,
        }


_RECORD = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.status == "queued")
    .values(
        {
            "status": bindparam("b_status"),
            "error": bindparam("b_error"),
            "provider_message_id": func.coalesce(
                bindparam("b_pmid", type_=deliveries.c.provider_message_id.type),
                deliveries.c.provider_message_id,
            ),
            "sent_at": bindparam("b_sent_at", type_=deliveries.c.sent_at.type),
            "delivered_at": bindparam("b_delivered_at", type_=deliveries.c.delivered_at.type),
            "failed_at": bindparam("b_failed_at", type_=deliveries.c.failed_at.type),
            "next_attempt_at": bindparam("b_next", type_=deliveries.c.next_attempt_at.type),
            "metadata": bindparam("b_meta", type_=deliveries.c["metadata"].type),
            "claimed_until": None,
            "attempts": deliveries.c.attempts - bindparam("b_undo"),
            "updated_at": bindparam("b_now", type_=deliveries.c.updated_at.type),
        }
    )
)


@dataclass(frozen=True)
class TeamPolicy:
    """A team's quiet hours, pacing and cap: its own values, else the global ones."""

    quiet_hours: QuietHours | None
    rate: Rate
    own_pacing: bool
    cap: int
    window_days: int

    def pacing_key(self, team_id: int, channel: str) -> str:
        """Teams with their own pacing have their own slot log; the rest share the channel's."""
        return f"{channel}:team:{team_id}" if self.own_pacing else channel


@dataclass(frozen=True)
class _Turn:
    """A send's pacing answer: go at `due` (monotonic clock), or retry after `wait`."""

    granted: bool
    wait: float
    due: float
    lateness_allowed: float  # how long past `due` the send may still go


UNPACED = _Turn(True, 0.0, 0.0, math.inf)


@dataclass
class _Work:
    """A claimed delivery with everything needed to decide and send it."""

    job: ReservedJob
    delivery_id: int
    attempts: int
    metadata: dict[str, Any]
    outgoing: Outgoing | None
    channel: Channel | None
    policy: TeamPolicy | None = None
    extra_jobs: list[ReservedJob] = field(default_factory=list)
    cap_reserved: bool = False


class DeliveryProcessor:
    """The worker's batch processor for ProcessMsgDelivery jobs.

    Without `limits` (a bare processor in a unit test) there are no caps and no pacing.
    """

    def __init__(
        self,
        *,
        database: Database,
        channels: Mapping[str, Channel],
        policy: RetryPolicy,
        limits: Limits | None = None,
        connection_name: str = "database",
    ) -> None:
        self.database = database
        self.channels = channels
        self.policy = policy
        self.limits = limits
        self.connection_name = connection_name  # the queue driver, as failed_jobs names it

    async def __call__(
        self, jobs: Sequence[ReservedJob], options: WorkerOptions
    ) -> list[JobResult]:
        results: list[JobResult] = []
        by_delivery: dict[int, list[ReservedJob]] = {}
        for job in jobs:
            delivery_id = _delivery_id(job)
            if delivery_id is None:
                results.append(JobResult(job, "fail", error="malformed ProcessMsgDelivery payload"))
            else:
                by_delivery.setdefault(delivery_id, []).append(job)
        if not by_delivery:
            return results
        now = utcnow()
        lease = now + timedelta(seconds=options.timeout + LEASE_MARGIN_SECONDS)
        claimed = await self._claim(list(by_delivery), now, lease)
        unclaimed = [i for i in by_delivery if i not in claimed]
        results.extend(await self._settle_unclaimed(unclaimed, by_delivery, now))
        if claimed:
            work = await self._load(claimed, by_delivery)
            results.extend(await self._run(work, options))
        return results

    async def _claim(self, ids: list[int], now: datetime, lease: datetime) -> dict[int, int]:
        """Lease the deliveries that are ready; returns {delivery id: attempt number}."""
        stmt = (
            update(deliveries)
            .where(
                deliveries.c.id.in_(ids),
                deliveries.c.status == "queued",
                or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until <= now),
                or_(deliveries.c.send_at.is_(None), deliveries.c.send_at <= now),
                or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
            )
            .values(claimed_until=lease, attempts=deliveries.c.attempts + 1, updated_at=now)
            .returning(deliveries.c.id, deliveries.c.attempts)
        )
        async with self.database.connect() as conn:
            return {row.id: row.attempts for row in await conn.execute(stmt)}

    async def _settle_unclaimed(
        self, ids: list[int], by_delivery: dict[int, list[ReservedJob]], now: datetime
    ) -> list[JobResult]:
        """Jobs whose delivery is done (ack) or not yet due / leased elsewhere (release)."""
        if not ids:
            return []
        async with self.database.engine.connect() as conn:
            rows = {
                r.id: r
                for r in await conn.execute(
                    select(
                        deliveries.c.id,
                        deliveries.c.status,
                        deliveries.c.claimed_until,
                        deliveries.c.send_at,
                        deliveries.c.next_attempt_at,
                    ).where(deliveries.c.id.in_(ids))
                )
            }
        results: list[JobResult] = []
        for delivery_id in ids:
            row = rows.get(delivery_id)
            jobs = by_delivery[delivery_id]
            if row is None or row.status != "queued":
                results.extend(JobResult(j, "ack") for j in jobs)
                continue
            due = max(
                (t for t in (row.claimed_until, row.send_at, row.next_attempt_at) if t), default=now
            )
            delay = max(1.0, (due - now).total_seconds() + 1.0)
            results.append(JobResult(jobs[0], "release", delay=delay))
            results.extend(JobResult(j, "ack") for j in jobs[1:])
        return results

    async def _load(
        self, claimed: dict[int, int], by_delivery: dict[int, list[ReservedJob]]
    ) -> list[_Work]:
        """Deliveries, messages, recipients and teams of the batch, in four queries."""
        async with self.database.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        deliveries.c.id,
                        deliveries.c.team_id,
                        deliveries.c.recipient_type,
                        deliveries.c.recipient_id,
                        deliveries.c.channel,
                        deliveries.c["metadata"],
                        table(Message).c.subject,
                        table(Message).c.body,
                        table(Message).c.is_transactional,
                    )
                    .join(table(Message), table(Message).c.id == deliveries.c.msg_message_id)
                    .where(deliveries.c.id.in_(list(claimed)))
                )
            ).all()
            users = await _recipients(
                conn, User, [r.recipient_id for r in rows if r.recipient_type == "user"]
            )
            guests = await _recipients(
                conn, Guest, [r.recipient_id for r in rows if r.recipient_type == "guest"]
            )
            teams = await _teams(
                conn, {r.team_id for r in rows if r.team_id is not None}, self.limits
            )
        work: list[_Work] = []
        for row in rows:
            jobs = by_delivery[row.id]
            recipient = (users if row.recipient_type == "user" else guests).get(row.recipient_id)
            team, policy = teams.get(row.team_id, (None, None))
            outgoing = None
            if recipient is not None and team is not None:
                outgoing = Outgoing(
                    delivery_id=row.id,
                    channel=row.channel,
                    subject=row.subject,
                    body=row.body or "",
                    transactional=bool(row.is_transactional),
                    recipient=recipient,
                    team=team,
                )
            work.append(
                _Work(
                    job=jobs[0],
                    delivery_id=row.id,
                    attempts=claimed[row.id],
                    metadata=dict(row.metadata or {}),
                    outgoing=outgoing,
                    channel=self.channels.get(row.channel),
                    policy=policy,
                    extra_jobs=jobs[1:],
                )
            )
        return work

    async def _run(self, work: list[_Work], options: WorkerOptions) -> list[JobResult]:
        consent = await self._consent(work)
        now = utcnow()
        decisions = {item.delivery_id: self._decide(item, consent, now) for item in work}
        await self._reserve_caps(work, decisions)
        to_send: list[_Work] = []
        settled: list[tuple[_Work, _Record, JobResult]] = []
        for item in work:
            decision = decisions[item.delivery_id]
            if decision.action == "send":
                to_send.append(item)
            elif decision.action == "defer":
                assert decision.not_before is not None
                delay = (decision.not_before - now).total_seconds()
                settled.append(self._defer(item, delay, decision.detail))
            else:
                record = _Record(item.delivery_id, "skipped", error=decision.error)
                settled.append((item, record, self._ack_all(item)))
        results: list[JobResult] = []
        if settled:
            await self._write([record for _, record, _ in settled], now)
            results.extend(result for _, _, result in settled)
            results.extend(r for item, _, _ in settled for r in self._ack_extras(item))
        if to_send:
            results.extend(await self._send_all(to_send, options))
        return results

    async def _consent(self, work: list[_Work]) -> ConsentSnapshot:
        keys = []
        for item in work:
            if item.outgoing is not None and item.channel is not None:
                address = item.channel.address(item.outgoing.recipient)
                if address:
                    keys.append((item.outgoing.team.id, item.outgoing.channel, address))
        async with self.database.engine.connect() as conn:
            return await load_consent(conn, keys)

    def _decide(self, item: _Work, consent: ConsentSnapshot, now: datetime) -> Decision:
        if item.outgoing is None:
            return Decision("skip", Reason.RECIPIENT_NOT_FOUND.value, "the recipient was deleted")
        if item.channel is None:
            return Decision("skip", Reason.CHANNEL_UNSUPPORTED.value, "no such channel")
        return decide(
            item.outgoing,
            address=item.channel.address(item.outgoing.recipient),
            recipient_kinds=item.channel.recipient_kinds,
            consent=consent,
            now=now,
            quiet_hours=item.policy.quiet_hours if item.policy else None,
        )

    async def _reserve_caps(self, work: list[_Work], decisions: dict[int, Decision]) -> None:
        """Reserve cap room for the batch's capped sends; the rest become `frequency_cap`."""
        if self.limits is None:
            return
        bypass = self.limits.transactional_bypass
        capped = [
            item
            for item in work
            if decisions[item.delivery_id].action == "send"
            and item.outgoing is not None
            and item.policy is not None
            and counts_toward_cap(item.outgoing, transactional_bypass=bypass)
        ]
        requests = [
            CapRequest(
                item.delivery_id,
                item.outgoing.recipient.id,
                item.policy.cap,
                item.policy.window_days,
            )
            for item in capped
            if item.outgoing is not None and item.policy is not None
        ]
        granted = await reserve_caps(self.database, requests)
        for item in capped:
            assert item.policy is not None
            if item.delivery_id in granted:
                item.cap_reserved = True
            else:
                decisions[item.delivery_id] = over_cap(item.policy.cap, item.policy.window_days)

    async def _send_all(self, work: list[_Work], options: WorkerOptions) -> list[JobResult]:
        limit = asyncio.Semaphore(max(1, options.concurrency))
        max_attempts = options.tries or self.policy.max_attempts

        turns = await self._take_turns(work)

        async def attempt(item: _Work) -> tuple[_Work, _Record, JobResult]:
            async with limit:
                turn = turns.get(item.delivery_id, UNPACED)
                while True:
                    if not turn.granted:
                        return self._defer(item, turn.wait, "paced")
                    await asyncio.sleep(max(0.0, turn.due - time.monotonic()))
                    if time.monotonic() - turn.due <= turn.lateness_allowed:
                        break
                    # woke too late (a stalled process): the slot is spent, never overrun it
                    log.info("delivery %s: woke late for its slot, pacing again", item.delivery_id)
                    turn = (await self._take_turns([item])).get(item.delivery_id, UNPACED)
                return await self._attempt(item, options.timeout, max_attempts)

        results: list[JobResult] = []
        pending: list[_Record] = []
        writing: asyncio.Task[None] | None = None
        for next_done in asyncio.as_completed([attempt(item) for item in work]):
            item, record, result = await next_done
            pending.append(record)
            results.append(result)
            results.extend(self._ack_extras(item))
            if writing is None or writing.done():
                if writing is not None:
                    await writing
                batch, pending = pending, []
                writing = asyncio.create_task(self._write(batch, utcnow()))
        if writing is not None:
            await writing
        if pending:
            await self._write(pending, utcnow())
        return results

    def _pacing(self, item: _Work) -> tuple[str, Rate] | None:
        """The slot log and rate this send is paced by, or None when it is not paced."""
        if (
            self.limits is None
            or self.limits.pacer is None
            or item.policy is None
            or item.outgoing is None
            or item.outgoing.channel not in PACED_CHANNELS
        ):
            return None
        return item.policy.pacing_key(
            item.outgoing.team.id, item.outgoing.channel
        ), item.policy.rate

    async def _take_turns(self, work: list[_Work]) -> dict[int, _Turn]:
        """Pacing slots for the paced sends, one round trip per key (each key concurrently).

        A slot is taken only if it starts within one interval (at most two seconds); the others
        get the delay after which to try again.
        """
        groups: dict[tuple[str, Rate], list[_Work]] = {}
        for item in work:
            pacing = self._pacing(item)
            if pacing is not None:
                groups.setdefault(pacing, []).append(item)
        turns: dict[int, _Turn] = {}

        async def take(key: str, rate: Rate, items: list[_Work]) -> None:
            assert self.limits is not None and self.limits.pacer is not None
            try:
                slots = await self.limits.pacer.acquire_many(
                    key, rate, len(items), max_wait=min(rate.spacing, MAX_PACING_SLEEP_SECONDS)
                )
            except Exception:  # the pacing store is down: wait, never send unpaced
                log.exception("pacing store unavailable for %s", key)
                slots = [Slot(False, rate.interval, 0.0)] * len(items)
            now = time.monotonic()
            for item, slot in zip(items, slots, strict=True):
                turns[item.delivery_id] = _Turn(
                    slot.granted, slot.wait, now + slot.wait, rate.guard / 2
                )

        await asyncio.gather(*(take(key, rate, items) for (key, rate), items in groups.items()))
        return turns

    async def _slow_down(self, item: _Work, seconds: float) -> None:
        """The provider said 429 with Retry-After: no send on this channel until it has passed."""
        pacing = self._pacing(item)
        if pacing is None or self.limits is None or self.limits.pacer is None:
            return
        key, rate = pacing
        try:
            await self.limits.pacer.block(key, rate, seconds)
        except Exception:
            log.exception("delivery %s: could not slow the channel down", item.delivery_id)

    async def _attempt(
        self, item: _Work, timeout: float, max_attempts: int
    ) -> tuple[_Work, _Record, JobResult]:
        assert item.outgoing is not None and item.channel is not None
        try:
            sent: Sent = await asyncio.wait_for(item.channel.send(item.outgoing), timeout)
        except DeliverySkipped as exc:
            record = _Record(
                item.delivery_id, "skipped", error=str(exc), release_cap=item.cap_reserved
            )
            return item, record, self._ack_all(item)
        except SendError as exc:
            if exc.transient:
                if exc.retry_after:
                    await self._slow_down(item, exc.retry_after)
                return self._retry_or_fail(item, str(exc), max_attempts, exc.retry_after)
            return self._fail(item, str(exc))
        except TimeoutError:
            return self._retry_or_fail(
                item, f"{Reason.TIMED_OUT}: no answer within {timeout:g}s", max_attempts, None
            )
        except Exception as exc:  # an unexpected error is retried, never lost
            log.exception("delivery %s: unexpected error", item.delivery_id)
            return self._retry_or_fail(item, f"error: {exc!r}", max_attempts, None)
        now = utcnow()
        metadata = {**item.metadata, **sent.metadata} if sent.metadata else item.metadata
        record = _Record(
            item.delivery_id,
            sent.status,
            provider_message_id=sent.provider_message_id,
            sent_at=now,
            delivered_at=now if sent.status == "delivered" else None,
            metadata=metadata or None,
        )
        return item, record, self._ack_all(item)

    def _defer(self, item: _Work, delay: float, why: str) -> tuple[_Work, _Record, JobResult]:
        """Back to `queued` until `delay` has passed, the attempt not counted; job released."""
        delay = max(0.001, delay)
        record = _Record(
            item.delivery_id,
            "queued",
            next_attempt_at=utcnow() + timedelta(seconds=delay),
            metadata=item.metadata or None,
            undo_attempt=True,
            release_cap=item.cap_reserved,
        )
        log.debug("delivery %s: %s, waits %.3fs", item.delivery_id, why, delay)
        return item, record, JobResult(item.job, "release", delay=delay)

    def _retry_or_fail(
        self, item: _Work, error: str, max_attempts: int, retry_after: float | None
    ) -> tuple[_Work, _Record, JobResult]:
        if item.attempts >= max_attempts:
            return self._fail(
                item, f"{Reason.RETRIES_EXHAUSTED}: after {item.attempts} attempts, last: {error}"
            )
        delay = max(self.policy.delay_after(item.attempts), retry_after or 0.0)
        record = _Record(
            item.delivery_id,
            "queued",
            error=error,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
            metadata=item.metadata or None,
            release_cap=item.cap_reserved,
        )
        log.info(
            "delivery %s: attempt %d failed, retry in %.0fs", item.delivery_id, item.attempts, delay
        )
        return item, record, JobResult(item.job, "release", delay=delay)

    def _fail(self, item: _Work, error: str) -> tuple[_Work, _Record, JobResult]:
        record = _Record(
            item.delivery_id,
            "failed",
            error=error,
            failed_at=utcnow(),
            metadata=item.metadata or None,
            release_cap=item.cap_reserved,
            failed_job=item.job,
        )
        log.warning("delivery %s failed: %s", item.delivery_id, error)
        # The failed_jobs row commits with the delivery's `failed` (see `_write`), so a crash
        # after that write cannot leave a failed delivery without its record; the job is done.
        return item, record, JobResult(item.job, "ack")

    @staticmethod
    def _ack_all(item: _Work) -> JobResult:
        return JobResult(item.job, "ack")

    @staticmethod
    def _ack_extras(item: _Work) -> list[JobResult]:
        return [JobResult(j, "ack") for j in item.extra_jobs]

    async def _write(self, records: list[_Record], now: datetime) -> None:
        """Record outcomes, failed jobs and the cap room of unsent work, in one transaction."""
        failed = [
            failed_job_row(
                connection=self.connection_name, job=r.failed_job, exception=r.error or ""
            )
            for r in records
            if r.failed_job is not None
        ]
        async with self.database.connect() as conn:
            await conn.execute(_RECORD, [r.params(now) for r in records])
            await release_caps(conn, [r.delivery_id for r in records if r.release_cap])
            if failed:
                await conn.execute(insert(failed_jobs), failed)


def _delivery_id(job: ReservedJob) -> int | None:
    if job.payload.get("job") != JOB_NAME:
        return None
    value = job.payload.get("delivery_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _recipients(
    conn: AsyncConnection, model: type[User] | type[Guest], ids: list[int]
) -> dict[int, Recipient]:
    if not ids:
        return {}
    source = table(model)
    rows = await conn.execute(select(source).where(source.c.id.in_(set(ids))))
    found: dict[int, Recipient] = {}
    for r in rows:
        if model is User:
            found[r.id] = Recipient("user", r.id, None, None, r.name, r.email, r.phone)
        else:
            found[r.id] = Recipient(
                "guest", r.id, r.first_name, r.last_name, None, r.email, r.phone, r.subscribed
            )
    return found


def _quiet_hours(start: str | None, end: str | None) -> QuietHours | None:
    try:
        return QuietHours.from_strings(start, end)
    except ValidationFailed:  # stored before validation existed: ignore rather than block
        log.warning("ignoring malformed quiet hours %r-%r", start, end)
        return None


async def _teams(
    conn: AsyncConnection, ids: set[int], limits: Limits | None
) -> dict[int, tuple[TeamProfile, TeamPolicy]]:
    if not ids:
        return {}
    teams, settings = table(Team), table(TeamSettings)
    rows = await conn.execute(
        select(teams, settings)
        .outerjoin(settings, settings.c.team_id == teams.c.id)
        .where(teams.c.id.in_(ids))
    )
    found: dict[int, tuple[TeamProfile, TeamPolicy]] = {}
    for r in rows:
        profile = TeamProfile(
            id=r.id,
            name=r.name,
            sms_verified=r.sms_verification_status == "verified",
            sms_from_number=r.sms_from_number,
            business_name=r.business_name,
            footer_text=r.footer_text,
            help_text=r.help_text,
            email_from_address=r.email_from_address,
            email_from_name=r.email_from_name,
        )
        rate = limits.rate if limits else Rate(1, 1.0)
        policy = TeamPolicy(
            quiet_hours=_quiet_hours(r.quiet_hours_start, r.quiet_hours_end),
            rate=Rate(r.batch_size or rate.limit, r.batch_interval_seconds or rate.interval),
            own_pacing=r.batch_size is not None or r.batch_interval_seconds is not None,
            cap=r.per_guest_cap if r.per_guest_cap is not None else _cap(limits),
            window_days=r.per_guest_window_days or (limits.per_guest_window_days if limits else 30),
        )
        found[r.id] = (profile, policy)
    return found


def _cap(limits: Limits | None) -> int:
    return limits.per_guest_cap if limits else 0
