"""Never commit a Kafka offset past a message that was not processed.

faust-streaming 0.15.3 loses messages when a worker restarts or a rebalance
moves partitions while a live stream is arriving (docs/kafka.md has the
evidence). The chain, all inside Faust's consumer:

1. **Stale records after a seek.** After an assignment Faust resumes the
   fetcher, then recovery seeks every partition back to its committed offset.
   The drain loop is still yielding records of a fetch made *before* the seek,
   so they arrive after ``perform_seek`` reset the read offset.
2. **The jump becomes a "gap".** The first stale record is far ahead of the
   reset read offset, so Faust records the offsets in between as a gap in the
   log (offsets the broker never had) although it delivered them moments ago.
3. **Delivered messages are skipped, then dropped.** Records delivered while
   recovery holds flow control are skipped by the stream without an ack; their
   re-fetched copies are dropped as "already read" (``DROPPED MESSAGE ROFF``)
   because the stale records pushed the read offset past them.
4. **The gap is committed.** Gaps count as done, the head guard is off by one
   (``min(acked) - committed > 1``), so the commit moves past messages that no
   stream ever processed.

This module enforces the invariant directly instead of patching each step:
the committed offset advances over an offset only if a stream acked it, or if
the broker never handed it out (a real gap: compaction, transaction markers).

* The consumer thread counts seeks per partition at the moment the fetch
  position changes, and tags each fetched batch with the counts it was fetched
  under; a record whose partition was sought since is stale and is not
  delivered (the seek fetches it again). aiokafka itself never returns
  pre-seek data after a seek, so the check is exact.
* Every offset handed to Faust stays "delivered" until a stream acks it.
  Commits stop below the oldest delivered-but-unacked offset of a partition
  (in flight, or skipped by a stream), gaps never cover one, and the head of
  the acked run must be the committed offset itself.
* A partition whose commit stays blocked by a delivered message that nothing
  holds any more (skipped, never re-fetched) is sought back to it, so it is
  delivered again instead of stalling; this includes partitions nobody has
  committed yet, and partitions whose every delivered message was dropped.
* Records Faust fetched but withheld from the streams (its ``getmany`` drops
  a fetch's records of a partition paused for recovery, and the rest of a
  fetch when the flow stops or the generation changes) are fetched again.
  Recovery only re-seeks partitions with a committed offset; without this a
  survivor taking over a partition its dead owner never committed skipped
  the records fetched in that window (found under CPU load: 70-300 items of
  2,400 lost in 10 of 22 two-worker kill runs).
* Faust's pure-Python stream acks the records it skips; such an ack is
  refused (the record was not processed).
* Resuming flow control empties every stream's queue (mode's
  ``FlowControlEvent.resume`` clears them). Recovery resumes it *after* it
  sought the stream partitions, so records handed over in between are
  dropped unprocessed while later ones go on. Each such partition is sought
  back to its oldest dropped record at once, before anything after it is
  handed over, so a partition is processed in order (the aggregator counts
  a record that comes back behind its successors as late). Found under CPU
  load with a faster hand-off, which handed whole fetches in that window.

It also makes Faust's fixed 1500 ms fetch wait a setting.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import defaultdict
from typing import Any, AsyncIterator, Optional

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message
from faust.utils.functional import consecutive_numbers

from streams.contracts import metrics
from streams.kafka.handoff import InlineFirstStep

__all__ = ["SafeCommitConsumer", "SafeCommitTransport", "SafeCommitApp", "OffsetLedgerStats"]

log = logging.getLogger(__name__)

#: Generation of a handed-over record that a flow-control resume dropped: Faust's streams skip a record
#: whose generation is not the consumer's, and this one is nobody's.
DROPPED_GENERATION = -(2**63)  # no broker issues it (aiokafka uses -1 for "none")

#: Seconds a commit may stay blocked by a delivered message no stream holds before the partition is re-sought.
STALL_RESEEK_AFTER = 10.0


class _Fetched(dict):
    """Records of one fetch, with the per-partition seek counts they were fetched under."""

    seeks: dict


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Counts seeks per partition; makes Faust's fixed 1500 ms fetch wait a setting.

    A broker answers a fetch as soon as data arrives, or after this wait. Some
    brokers (tansu, see docs/kafka.md) only answer at the deadline, so the wait
    becomes pure latency there.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seeks: dict[TP, int] = defaultdict(int)

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)  # read by AIOKafkaConsumer.start()
        return consumer

    def _count_seeks(self, fetcher) -> None:
        # Every position change (Faust's seek, seek_to_committed) goes through Fetcher.seek_to.
        if getattr(fetcher, "_finsentry_counted", False):
            return
        seek_to = fetcher.seek_to

        def counted_seek_to(tp, offset):
            self.seeks[TP(tp.topic, tp.partition)] += 1
            return seek_to(tp, offset)

        fetcher.seek_to = counted_seek_to
        fetcher._finsentry_counted = True

    async def _fetch_records(self, consumer, active_partitions, timeout=None, max_records=None):
        if consumer._fetcher is not None:
            self._count_seeks(consumer._fetcher)
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                               max_records=max_records)
        # no await between the fetch returning and this snapshot: it is the fetch's own view
        fetched = _Fetched(records)
        fetched.seeks = dict(self.seeks)
        return fetched


class OffsetLedgerStats:
    """Counters of what the ledger prevented, for logs, metrics and tests."""

    def __init__(self) -> None:
        self.stale_records = 0  # fetched before a seek of their partition, not delivered
        self.gap_offsets_refused = 0  # delivered offsets that a gap would have covered
        self.reseeks = 0  # blocked partitions sought back to their oldest undone offset
        self.cleared_rewinds = 0  # partitions sought back to records a flow-control resume dropped from a queue
        self.refetches = 0  # fetched records Faust withheld from the streams, fetched again
        self.skipped_acks = 0  # Faust's acks of records its streams skipped unprocessed, refused


class SafeCommitConsumer(InlineFirstStep, aiokafka_driver.Consumer):
    """aiokafka consumer whose commits never pass an unprocessed message (see module docstring).

    It hands each fetched message to its stream without a task when it can (:mod:`.handoff`)."""

    _thread: _ConsumerThread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delivered: dict[TP, set[int]] = defaultdict(set)
        self._batch_seeks: dict | None = None
        self._batch_records: dict | None = None
        #: the messages handed out and not acked, while something (a queue, a buffer, a stream) holds them
        self._held: dict[TP, weakref.WeakValueDictionary] = defaultdict(weakref.WeakValueDictionary)
        self._blocked_since: dict[TP, tuple[int, float]] = {}
        #: partitions to seek back before anything else is handed over: (offset, seeks of it when noted)
        self._rewind: dict[TP, tuple[int, int]] = {}
        self.ledger = OffsetLedgerStats()

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def committed_offset(self, tp: TP) -> Optional[int]:
        """The last offset committed for ``tp`` by this consumer (the next one to read), if any."""
        return self._committed_offset.get(tp)

    # -- delivery ---------------------------------------------------------------------------------

    async def _wait_next_records(self, timeout: float):
        records, active = await super()._wait_next_records(timeout)
        self._batch_seeks = getattr(records, "seeks", None)
        self._batch_records = records
        return records, active

    def _is_stale(self, tp: TP) -> bool:
        fetched_under = self._batch_seeks
        if fetched_under is None:
            return False
        return self._thread.seeks.get(tp, 0) != fetched_under.get(tp, 0)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        acks_enabled_for = self.app.topics.acks_enabled_for
        self._batch_records = None
        handed: dict[TP, int] = {}
        self._rewind_dropped()
        async for tp, message in super().getmany(timeout):
            if self._rewind:
                self._rewind_dropped()  # the queues were cleared while the last record was handed over
            if self._is_stale(tp):
                self.ledger.stale_records += 1
                metrics.LEDGER.labels(event="stale_record").inc()
                continue  # fetched before this partition was sought: the seek fetches it again
            handed[tp] = message.offset
            if acks_enabled_for(message.topic):
                committed = self._committed_offset[tp]
                if committed is None or message.offset >= committed:
                    self._delivered[tp].add(message.offset)
                    self._held[tp][message.offset] = message
            yield tp, message
        self._fetch_again_withheld(handed)

    def _fetch_again_withheld(self, handed: dict[TP, int]) -> None:
        """Seek back to the first record of the last fetch that Faust withheld from the streams.

        Faust's ``getmany`` silently drops fetched records of a partition that is not active at that
        moment (paused for table recovery right after an assignment), and the rest of a fetch once
        the flow stops or the generation changes. aiokafka's position is already past them. Faust's
        recovery seeks partitions with a committed offset back to it, which fetches them again, but
        a partition nobody committed yet keeps its position, so those records would never reach a
        stream and the first commit after them would pass them.
        """
        records, self._batch_records = self._batch_records, None
        if not records:
            return
        acks_enabled_for = self.app.topics.acks_enabled_for
        assignment = self.assignment()
        for tp, batch in records.items():
            if not batch or tp not in assignment or not acks_enabled_for(tp.topic) or self._is_stale(tp):
                continue
            last = handed.get(tp)
            withheld = [r.offset for r in batch if last is None or r.offset > last]
            if not withheld:
                continue
            first = min(withheld)
            committed = self._committed_offset[tp]
            if committed is not None and first < committed:
                continue  # already done
            self.ledger.refetches += 1
            metrics.LEDGER.labels(event="refetch").inc()
            log.info("%s: %d fetched records from offset %d were withheld from the streams; fetching them again",
                     tp, len(withheld), first)
            self._delivered[tp].add(first)  # no commit passes it before a stream has it
            self._seek_back(tp, first)

    def on_queues_cleared(self) -> None:
        """Note, per partition, the oldest handed-over record no stream took: the queues it waited in
        were just emptied. The seek back happens at the next record, once the drain loop finished the
        hand-over in progress (its read offset would overwrite ours). That record, and any other
        dropped one still referenced, gets a generation no stream accepts: should it still reach a
        queue, the stream skips it instead of processing it ahead of the records fetched again."""
        for tp, delivered in self._delivered.items():
            committed = self._committed_offset[tp]
            held = self._held[tp]
            dropped = []
            for offset in delivered:
                if committed is not None and offset < committed:
                    continue
                message = held.get(offset)
                if message is None:
                    dropped.append(offset)
                elif not (message.tracked or message.acked):
                    message.generation_id = DROPPED_GENERATION
                    dropped.append(offset)
            if dropped:
                offset, seeks = min(dropped), self._thread.seeks.get(tp, 0)
                earlier = self._rewind.get(tp)
                if earlier is not None and earlier[1] == seeks:  # one sought since is void (see _rewind_dropped)
                    offset = min(offset, earlier[0])
                self._rewind[tp] = (offset, seeks)

    def _rewind_dropped(self) -> None:
        rewind, self._rewind = self._rewind, {}
        for tp, (offset, seeks) in rewind.items():
            if tp not in self.assignment() or self._thread.seeks.get(tp, 0) != seeks:
                continue  # revoked, or sought since (recovery's seek to the committed offset covers it)
            self.ledger.cleared_rewinds += 1
            metrics.LEDGER.labels(event="cleared_rewind").inc()
            log.info("%s: records from offset %d were dropped from a stream's queue unprocessed; fetching them "
                     "again", tp, offset)
            self._seek_back(tp, offset)

    def _seek_back(self, tp: TP, offset: int) -> None:
        """Fetch ``tp`` again from ``offset``; Faust's read offset moves with it so nothing is dropped as read."""
        self._read_offset[tp] = offset
        self._thread.seek(tp, offset)

    def ack(self, message: Message) -> bool:
        if not message.tracked and not message.acked and self.app.topics.acks_enabled_for(message.topic):
            # Faust's pure-Python stream acks the records it skips (flow stopped, stale generation)
            # although no stream processed them: they stay undone and are delivered again.
            self.ledger.skipped_acks += 1
            metrics.LEDGER.labels(event="skipped_ack_refused").inc()
            return False
        result = super().ack(message)
        delivered = self._delivered.get(message.tp)
        if delivered is not None and message.acked:
            delivered.discard(message.offset)
        return result

    async def on_partitions_revoked(self, revoked) -> None:
        for tp in revoked:
            self._delivered.pop(tp, None)
            self._rewind.pop(tp, None)
            self._held.pop(tp, None)
            self._blocked_since.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    # -- commit bookkeeping -----------------------------------------------------------------------

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust passes the offset of the message being delivered as offset_to;
        # that message is not missing from the log, so the gap ends before it.
        if offset_to - 1 >= offset_from:
            await super()._add_gap(tp, offset_from, offset_to - 1)

    def _oldest_undone(self, tp: TP) -> Optional[int]:
        """Oldest offset of ``tp`` handed to a stream and not acked (in flight or skipped)."""
        delivered = self._delivered.get(tp)
        committed = self._committed_offset[tp]
        if delivered and committed is not None:
            delivered.difference_update([o for o in delivered if o < committed])  # done by definition
        return min(delivered) if delivered else None

    def _filter_tps_with_pending_acks(self, topics=None):
        # Faust looks only at partitions with acks; one whose every delivered record was dropped
        # unprocessed has none, and must still be checked for a stall.
        pending = set(super()._filter_tps_with_pending_acks(topics))
        pending.update(tp for tp, delivered in self._delivered.items()
                       if delivered and (topics is None or tp in topics or tp.topic in topics))
        return iter(pending)

    def _new_offset(self, tp: TP) -> Optional[int]:
        acked = self._acked[tp]
        if not acked:
            self._note_blocked(tp, self._committed_offset[tp], self._oldest_undone(tp))
            return None
        undone = self._oldest_undone(tp)
        max_offset = max(acked)
        gaps = self._gap[tp]
        if gaps:  # offsets the broker never delivered count as done, never a delivered one
            delivered = self._delivered.get(tp, set())
            merged: list[int] = []
            for interval in sorted(gaps.overlap(0, max_offset), key=lambda iv: iv.begin):
                for o in range(interval.begin, interval.end):
                    if o in delivered:
                        self.ledger.gap_offsets_refused += 1
                        metrics.LEDGER.labels(event="gap_offset_refused").inc()
                    else:
                        merged.append(o)
            if merged:
                index = self._acked_index[tp]
                acked.extend(o for o in merged if o not in index)
                index.update(merged)
            gaps.chop(0, max_offset + 1)
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is not None and min(acked) > committed:
            self._note_blocked(tp, committed, undone)
            return None  # the committed offset itself is not done yet
        run = list(next(consecutive_numbers(acked)))
        if undone is not None:
            run = [o for o in run if o < undone]
            if not run:
                self._note_blocked(tp, committed, undone)
                return None
        self._blocked_since.pop(tp, None)
        del acked[: len(run)]
        self._acked_index[tp].difference_update(run)
        return run[-1] + 1

    def _note_blocked(self, tp: TP, committed: Optional[int], undone: Optional[int]) -> None:
        """Re-seek a partition whose commit is held by a delivered message that nothing holds any more.

        ``committed`` is None for a partition nobody committed yet: then the oldest undone offset is
        the head.
        """
        if undone is None or (committed is not None and undone != committed):
            return
        held = self._held[tp].get(undone)
        if held is not None and not held.acked:
            self._blocked_since.pop(tp, None)  # queued, buffered or being processed: wait
            return
        since = self._blocked_since.setdefault(tp, (undone, time.monotonic()))
        if since[0] != undone:
            self._blocked_since[tp] = (undone, time.monotonic())
        elif time.monotonic() - since[1] > STALL_RESEEK_AFTER:
            self._blocked_since.pop(tp, None)
            self.ledger.reseeks += 1
            metrics.LEDGER.labels(event="reseek").inc()
            log.warning("%s: offset %d was delivered but never processed; seeking back to it", tp, undone)
            self._delivered[tp].discard(undone)
            self._seek_back(tp, undone)


class SafeCommitTransport(aiokafka_driver.Transport):
    Consumer = SafeCommitConsumer


class SafeCommitApp(faust.App):
    """faust.App whose consumer is :class:`SafeCommitConsumer` (for ``kafka://`` URLs).

    ``fetch_max_wait_ms`` (attribute) overrides Faust's fixed 1500 ms fetch wait.
    ``early_tasks`` run from the start of the app, before table recovery (Faust's own
    ``app.task``s start only once recovery completed).
    """

    fetch_max_wait_ms: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.early_tasks: list = []
        clear_queues = self.flow_control.clear  # resume() calls it: every stream queue is emptied

        def clear_and_rewind() -> None:
            clear_queues()
            consumer = self._consumer
            if isinstance(consumer, SafeCommitConsumer):
                consumer.on_queues_cleared()

        self.flow_control.clear = clear_and_rewind  # type: ignore[method-assign]

    async def on_start(self) -> None:
        await super().on_start()
        for task in self.early_tasks:
            self.add_future(task())

    def _new_transport(self):
        url = self.conf.broker_consumer[0]
        if url.scheme in ("kafka", "aiokafka"):
            return SafeCommitTransport(self.conf.broker_consumer, self)
        return super()._new_transport()
