"""Never commit a Kafka offset past a message that is still being processed.

faust-streaming 0.15.3 can commit past an in-flight message, which loses it
on the next restart (faust-streaming issue #606, fix proposed in PR #707):

1. ``Consumer._new_offset`` lets the acked run start one past the committed
   offset (``min(acked) - committed > 1``), so with committed = N, N still
   processing and N+1.. acked, it commits N+2.. and N is never seen again.
2. ``Consumer._add_gap`` records the gap before a newly fetched message as
   ``[last_read + 1, offset]`` *inclusive*, so the new message itself is
   treated as a hole in the log and merged into the acked run while it is
   still being processed.

Both are fixed here in a consumer subclass, used through the app's transport,
by enforcing the invariant directly: the committable offset is capped at the
smallest offset of this partition that was handed to a stream and not acked,
and a gap never includes a delivered message. See docs/kafka.md.
"""

from __future__ import annotations

from typing import Optional

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from faust.utils.functional import consecutive_numbers

__all__ = ["SafeCommitConsumer", "SafeCommitTransport", "SafeCommitApp", "smallest_in_flight"]


def smallest_in_flight(consumer, tp: TP) -> Optional[int]:
    """Lowest offset on ``tp`` delivered to a stream and not yet acked."""
    offsets = [m.offset for m in list(consumer._unacked_messages) if m.tp == tp and not m.acked]
    return min(offsets) if offsets else None


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust hard-codes ``fetch_max_wait_ms=1500``; make it a setting.

    A broker answers a fetch as soon as data arrives, or after this wait. Some
    brokers (tansu, see docs/kafka.md) only answer at the deadline, so the wait
    becomes pure latency there.
    """

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)  # read by AIOKafkaConsumer.start()
        return consumer


class SafeCommitConsumer(aiokafka_driver.Consumer):
    """aiokafka consumer whose commits respect in-flight messages."""

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust passes the offset of the message being delivered as offset_to;
        # that message is not missing from the log, so the gap ends before it.
        if offset_to - 1 >= offset_from:
            await super()._add_gap(tp, offset_from, offset_to - 1)

    def _new_offset(self, tp: TP) -> Optional[int]:
        acked = self._acked[tp]
        if not acked:
            return None
        max_offset = max(acked)
        gaps = self._gap[tp]
        if gaps:  # offsets the broker never delivered count as done
            merged: list[int] = []
            for interval in sorted(gaps.overlap(0, max_offset), key=lambda iv: iv.begin):
                merged.extend(range(interval.begin, interval.end))
            if merged:
                index = self._acked_index[tp]
                acked.extend(o for o in merged if o not in index)
                index.update(merged)
                gaps.chop(0, max(merged[-1], max_offset) + 1)
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is not None and min(acked) - committed > 1:
            return None  # offsets before the acked run are not done yet
        run = list(next(consecutive_numbers(acked)))
        in_flight = smallest_in_flight(self, tp)
        if in_flight is not None:
            run = [o for o in run if o < in_flight]
            if not run:
                return None
        del acked[: len(run)]
        self._acked_index[tp].difference_update(run)
        return run[-1] + 1


class SafeCommitTransport(aiokafka_driver.Transport):
    Consumer = SafeCommitConsumer


class SafeCommitApp(faust.App):
    """faust.App whose consumer is :class:`SafeCommitConsumer` (for ``kafka://`` URLs).

    ``fetch_max_wait_ms`` (attribute) overrides Faust's fixed 1500 ms fetch wait.
    """

    fetch_max_wait_ms: int | None = None

    def _new_transport(self):
        url = self.conf.broker_consumer[0]
        if url.scheme in ("kafka", "aiokafka"):
            return SafeCommitTransport(self.conf.broker_consumer, self)
        return super()._new_transport()
