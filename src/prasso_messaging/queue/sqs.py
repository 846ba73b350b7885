"""The `sqs` driver: Amazon SQS (or any SQS-compatible server) through boto3 in worker threads.

A reservation is SQS's visibility timeout, set to `retry_after` on every receive, so a job whose
worker died reappears by itself. Sends, receives and deletes go in batches of ten (the SQS limit).
SQS delays a message by at most 900 s: a longer delay is sent as 900 s with the real due time in a
message attribute, and a worker that receives it early hides it again until it is due. Standard
queues promise no order. `SQS_QUEUE_URL` is the queue `QUEUE_NAME` names, whatever its last path
segment; other queue names map to URLs beside it (same account and region).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

from prasso_messaging.queue.base import (
    JsonPayload,
    QueueDriver,
    QueueSize,
    ReservedJob,
    decode_payload,
    encode_payload,
    first_line,
)

MAX_DELAY_SECONDS = 900
MAX_VISIBILITY_SECONDS = 43_200
BATCH = 10
_DUE_AT = "prasso_due_at"
_NO_SUCH_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


class SqsQueue(QueueDriver):
    name = "sqs"
    setting = "SQS_QUEUE_URL"

    def __init__(
        self, client: Any, *, queue_url: str, default_queue: str, retry_after: float
    ) -> None:
        self.client = client
        self.queue_url = queue_url
        self.default_queue = default_queue
        self.retry_after = retry_after

    @classmethod
    def connect(
        cls,
        *,
        queue_url: str,
        default_queue: str,
        endpoint_url: str,
        region: str,
        retry_after: float,
    ) -> SqsQueue:
        import boto3

        client = boto3.session.Session().client(
            "sqs", endpoint_url=endpoint_url or None, region_name=region
        )
        return cls(
            client, queue_url=queue_url, default_queue=default_queue, retry_after=retry_after
        )

    def url(self, queue: str) -> str:
        """`SQS_QUEUE_URL` as given for the default queue (`QUEUE_NAME`); others live beside it."""
        if queue == self.default_queue:
            return self.queue_url
        return f"{self.queue_url.rstrip('/').rpartition('/')[0]}/{queue}"

    def describe_failure(self, queue: str, exc: Exception) -> str:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in _NO_SUCH_QUEUE:
            return f"queue {self.url(queue)} does not exist"
        return f"cannot reach queue {self.url(queue)} ({first_line(exc)})"

    async def push_many(
        self,
        queue: str,
        payloads: Sequence[JsonPayload],
        *,
        delay: float = 0,
        connection: Any = None,
    ) -> None:
        url = self.url(queue)
        native = min(MAX_DELAY_SECONDS, math.ceil(max(0.0, delay)))
        extra: dict[str, Any] = {}
        if delay > MAX_DELAY_SECONDS:
            due = {"DataType": "Number", "StringValue": str(time.time() + delay)}
            extra = {"MessageAttributes": {_DUE_AT: due}}
        for start in range(0, len(payloads), BATCH):
            entries = [
                {"Id": str(i), "MessageBody": encode_payload(p), "DelaySeconds": native, **extra}
                for i, p in enumerate(payloads[start : start + BATCH])
            ]
            result = await asyncio.to_thread(
                self.client.send_message_batch, QueueUrl=url, Entries=entries
            )
            if result.get("Failed"):
                raise RuntimeError(f"SQS refused {len(result['Failed'])} message(s): {result}")

    async def reserve(self, queue: str, *, limit: int) -> list[ReservedJob]:
        return await asyncio.to_thread(self._reserve, queue, limit)

    def _reserve(self, queue: str, limit: int) -> list[ReservedJob]:
        url = self.url(queue)
        jobs: list[ReservedJob] = []
        while len(jobs) < limit:
            messages = self.client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(BATCH, limit - len(jobs)),
                VisibilityTimeout=int(self.retry_after),
                WaitTimeSeconds=0,
                AttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=[_DUE_AT],
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                job = self._due_job(url, queue, message)
                if job is not None:
                    jobs.append(job)
        return jobs

    def _due_job(self, url: str, queue: str, message: dict[str, Any]) -> ReservedJob | None:
        """The job, or None after hiding a message that arrived before its long delay ended."""
        due_attr = message.get("MessageAttributes", {}).get(_DUE_AT)
        if due_attr is not None:
            remaining = float(due_attr["StringValue"]) - time.time()
            if remaining > 1:
                self.client.change_message_visibility(
                    QueueUrl=url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=min(MAX_VISIBILITY_SECONDS, math.ceil(remaining)),
                )
                return None
        return ReservedJob(
            message["MessageId"],
            queue,
            decode_payload(message["Body"]),
            int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            receipt=message["ReceiptHandle"],
        )

    async def ack(self, jobs: Sequence[ReservedJob]) -> None:
        by_queue: dict[str, list[ReservedJob]] = {}
        for job in jobs:
            by_queue.setdefault(job.queue, []).append(job)
        for queue, queued in by_queue.items():
            for start in range(0, len(queued), BATCH):
                entries = [
                    {"Id": str(i), "ReceiptHandle": job.receipt}
                    for i, job in enumerate(queued[start : start + BATCH])
                ]
                await asyncio.to_thread(
                    self.client.delete_message_batch, QueueUrl=self.url(queue), Entries=entries
                )

    async def release(self, job: ReservedJob, *, delay: float) -> None:
        await asyncio.to_thread(
            self.client.change_message_visibility,
            QueueUrl=self.url(job.queue),
            ReceiptHandle=job.receipt,
            VisibilityTimeout=min(MAX_VISIBILITY_SECONDS, math.ceil(max(0.0, delay))),
        )

    async def size(self, queue: str) -> QueueSize:
        attributes = (
            await asyncio.to_thread(
                self.client.get_queue_attributes,
                QueueUrl=self.url(queue),
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesDelayed",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        )["Attributes"]
        return QueueSize(
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesDelayed"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    async def clear(self, queue: str) -> int:
        dropped = (await self.size(queue)).total
        await asyncio.to_thread(self.client.purge_queue, QueueUrl=self.url(queue))
        return dropped

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)
