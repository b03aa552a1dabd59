"""The consumer never commits past a message that was not processed.

These drive the real consumer class's offset bookkeeping with the states that
lose messages in stock faust-streaming 0.15.3 (the upstream #606 report and the
restart race in docs/kafka.md); the stock logic runs beside it to show the loss
it would cause. The end-to-end proof is tests/test_faults.py.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace

from faust.transport.drivers.aiokafka import Consumer as StockConsumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.kafka import consumer as consumer_module
from streams.kafka.consumer import OffsetLedgerStats, SafeCommitConsumer

TOPIC = TP("news.items", 0)


@dataclass(eq=False)
class _Msg:
    tp: TP
    offset: int
    acked: bool = False
    tracked: bool = True
    topic: str = TOPIC.topic


@dataclass
class _Record:
    offset: int


class _Thread:
    def __init__(self) -> None:
        self.seeks: dict = defaultdict(int)
        self.sought: list = []

    def seek(self, tp, offset):
        self.seeks[tp] += 1
        self.sought.append((tp, offset))


def _consumer(cls, committed, acked, in_flight=(), gaps=(), skipped=()):
    """Bookkeeping only, no broker. ``in_flight``: delivered and held by a stream; ``skipped``: delivered,
    then dropped by a stream without an ack (Faust skips events while recovery holds flow control)."""
    consumer = object.__new__(cls)
    consumer._acked = defaultdict(list, {TOPIC: sorted(acked)})
    consumer._acked_index = defaultdict(set, {TOPIC: set(acked)})
    consumer._committed_offset = defaultdict(lambda: None, {TOPIC: committed})
    consumer._read_offset = defaultdict(lambda: None)
    consumer._gap = defaultdict(IntervalTree)
    for begin, end in gaps:
        consumer._gap[TOPIC].addi(begin, end)
    consumer._unacked_messages = {_Msg(TOPIC, o) for o in in_flight}  # strong references: they stay held
    consumer._held = defaultdict(weakref.WeakValueDictionary,
                                 {TOPIC: weakref.WeakValueDictionary({m.offset: m for m in consumer._unacked_messages})})
    consumer._delivered = defaultdict(set, {TOPIC: set(in_flight) | set(skipped)})
    consumer._batch_records = None
    consumer.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
    consumer.assignment = lambda: {TOPIC}
    consumer._blocked_since = {}
    consumer._rewind = {}
    consumer._batch_seeks = None
    consumer._thread = _Thread()
    consumer.ledger = OffsetLedgerStats()
    return consumer


def test_head_message_in_flight_blocks_commit():
    # committed=2585 (next to read), 2585 still processing, 2586..2589 acked
    state = dict(committed=2585, acked=[2586, 2587, 2588, 2589], in_flight=[2585])
    assert StockConsumer._new_offset(_consumer(StockConsumer, **state), TOPIC) == 2590  # would lose 2585
    assert SafeCommitConsumer._new_offset(_consumer(SafeCommitConsumer, **state), TOPIC) is None


def test_head_message_skipped_by_a_stream_blocks_commit():
    # 2585 was delivered while recovery held flow control: the stream dropped it without an ack,
    # so nothing holds it in flight; stock faust commits past it, the ledger does not
    state = dict(committed=2585, acked=[2586, 2587, 2588], skipped=[2585])
    assert StockConsumer._new_offset(_consumer(StockConsumer, **state), TOPIC) == 2589
    assert SafeCommitConsumer._new_offset(_consumer(SafeCommitConsumer, **state), TOPIC) is None


def test_fresh_group_with_out_of_order_batches_does_not_skip_first_batch():
    # no commit yet; batch 0..15 in flight, batch 16..31 acked first (concurrency > 1)
    state = dict(committed=None, acked=list(range(16, 32)), in_flight=list(range(16)))
    assert StockConsumer._new_offset(_consumer(StockConsumer, **state), TOPIC) == 32  # would lose 0..15
    safe = _consumer(SafeCommitConsumer, **state)
    assert SafeCommitConsumer._new_offset(safe, TOPIC) is None
    # once the first batch is acked, everything is committable and nothing is forgotten
    safe._unacked_messages = set()
    safe._delivered[TOPIC].clear()
    safe._acked[TOPIC] = sorted(list(range(16)) + safe._acked[TOPIC])
    safe._acked_index[TOPIC].update(range(16))
    assert SafeCommitConsumer._new_offset(safe, TOPIC) == 32


def test_commit_stops_just_below_the_oldest_in_flight_message():
    consumer = _consumer(SafeCommitConsumer, committed=10, acked=[10, 11, 12, 14, 15], in_flight=[13])
    assert SafeCommitConsumer._new_offset(consumer, TOPIC) == 13
    assert consumer._acked[TOPIC] == [14, 15]  # kept for the next commit


def test_real_gaps_in_the_log_are_skipped_but_never_a_delivered_message():
    # offsets 12..13 were never delivered (compaction); 14 is in flight
    consumer = _consumer(SafeCommitConsumer, committed=10, acked=[10, 11, 15], in_flight=[14], gaps=[(12, 14)])
    assert SafeCommitConsumer._new_offset(consumer, TOPIC) == 14


def test_a_gap_over_delivered_messages_is_refused():
    # the restart race: after the seek back to 386, a stale record 424 makes faust record the gap
    # [387, 423] over messages it delivered before the seek and that a stream skipped
    state = dict(committed=386, acked=[386] + list(range(424, 430)), gaps=[(387, 424)],
                 skipped=list(range(387, 424)))
    assert StockConsumer._new_offset(_consumer(StockConsumer, **state), TOPIC) == 430  # would lose 387..423
    safe = _consumer(SafeCommitConsumer, **state)
    assert SafeCommitConsumer._new_offset(safe, TOPIC) == 387
    assert safe.ledger.gap_offsets_refused == 37


def test_gap_before_a_delivered_message_excludes_that_message():
    stock = _consumer(StockConsumer, committed=10, acked=[])
    safe = _consumer(SafeCommitConsumer, committed=10, acked=[])
    # faust calls _add_gap(tp, last_read + 1, offset_of_message_being_delivered)
    asyncio.run(StockConsumer._add_gap(stock, TOPIC, 11, 14))
    asyncio.run(SafeCommitConsumer._add_gap(safe, TOPIC, 11, 14))
    assert stock._gap[TOPIC].overlaps(14)  # stock: the delivered message counts as a hole
    assert not safe._gap[TOPIC].overlaps(14)
    assert all(safe._gap[TOPIC].overlaps(o) for o in (11, 12, 13))


def test_records_fetched_before_a_seek_of_their_partition_are_stale():
    safe = _consumer(SafeCommitConsumer, committed=10, acked=[])
    other = TP("social.posts", 0)
    safe._batch_seeks = {TOPIC: 1, other: 4}  # counts when the batch was fetched
    safe._thread.seeks.update({TOPIC: 1, other: 4})
    assert not safe._is_stale(TOPIC) and not safe._is_stale(other)
    safe._thread.seeks[TOPIC] += 1  # recovery seeks news.items back to its committed offset
    assert safe._is_stale(TOPIC)
    assert not safe._is_stale(other)  # a partition that was not sought keeps its records


def test_a_skipped_head_is_sought_again_instead_of_stalling(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: clock[0])
    safe = _consumer(SafeCommitConsumer, committed=50, acked=[51, 52], skipped=[50])
    assert SafeCommitConsumer._new_offset(safe, TOPIC) is None
    clock[0] += consumer_module.STALL_RESEEK_AFTER / 2
    assert SafeCommitConsumer._new_offset(safe, TOPIC) is None
    assert safe._thread.sought == []  # not yet
    clock[0] += consumer_module.STALL_RESEEK_AFTER
    assert SafeCommitConsumer._new_offset(safe, TOPIC) is None
    assert safe._thread.sought == [(TOPIC, 50)]
    assert safe._read_offset[TOPIC] == 50 and safe.ledger.reseeks == 1


def test_a_head_held_by_a_stream_is_never_sought(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: clock[0])
    safe = _consumer(SafeCommitConsumer, committed=50, acked=[51, 52], in_flight=[50])
    for _ in range(3):
        assert SafeCommitConsumer._new_offset(safe, TOPIC) is None
        clock[0] += consumer_module.STALL_RESEEK_AFTER
    assert safe._thread.sought == []


def test_a_skipped_head_of_a_partition_nobody_committed_is_sought_again(monkeypatch):
    # no committed offset yet: the oldest undone offset is the head
    clock = [100.0]
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: clock[0])
    state = dict(committed=None, acked=[1, 2, 3], skipped=[0])
    assert StockConsumer._new_offset(_consumer(StockConsumer, **state), TOPIC) == 4  # would lose 0
    safe = _consumer(SafeCommitConsumer, **state)
    assert SafeCommitConsumer._new_offset(safe, TOPIC) is None
    clock[0] += consumer_module.STALL_RESEEK_AFTER * 1.5
    assert SafeCommitConsumer._new_offset(safe, TOPIC) is None
    assert safe._thread.sought == [(TOPIC, 0)] and safe.ledger.reseeks == 1


def test_a_partition_whose_every_delivered_message_was_dropped_is_checked_and_sought_again(monkeypatch):
    # nothing of the partition was ever acked, so faust never looks at it when committing
    clock = [100.0]
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: clock[0])
    safe = _consumer(SafeCommitConsumer, committed=7, acked=[], skipped=[7, 8])
    safe._acked.clear()
    assert list(StockConsumer._filter_tps_with_pending_acks(safe)) == []
    assert list(SafeCommitConsumer._filter_tps_with_pending_acks(safe)) == [TOPIC]
    for _ in range(3):  # at 0, 0.75 and 1.5 stall periods
        assert SafeCommitConsumer._new_offset(safe, TOPIC) is None
        clock[0] += consumer_module.STALL_RESEEK_AFTER * 0.75
    assert safe._thread.sought == [(TOPIC, 7)]


def test_records_faust_withheld_from_the_streams_are_fetched_again_and_block_commits():
    # the survivor took the partition over from a worker killed before its first commit; the
    # fetch of offsets 0..9 arrived while recovery kept the partition paused, so faust's getmany
    # handed none of them to a stream
    safe = _consumer(SafeCommitConsumer, committed=None, acked=[])
    safe._batch_records = {TOPIC: [_Record(o) for o in range(10)]}
    safe._fetch_again_withheld(handed={})
    assert safe._thread.sought == [(TOPIC, 0)] and safe._read_offset[TOPIC] == 0
    assert safe.ledger.refetches == 1
    # later records acked before 0 comes back: no commit passes 0
    safe._acked[TOPIC] = [10, 11]
    safe._acked_index[TOPIC] = {10, 11}
    assert SafeCommitConsumer._new_offset(safe, TOPIC) is None


def test_only_the_withheld_tail_of_a_fetch_is_fetched_again():
    safe = _consumer(SafeCommitConsumer, committed=20, acked=[])
    safe._batch_records = {TOPIC: [_Record(o) for o in range(20, 30)]}
    safe._fetch_again_withheld(handed={TOPIC: 24})  # the flow stopped after 24
    assert safe._thread.sought == [(TOPIC, 25)]
    safe._batch_records = {TOPIC: [_Record(o) for o in range(30, 35)]}
    safe._fetch_again_withheld(handed={TOPIC: 34})  # all handed over: nothing to do
    assert safe._thread.sought == [(TOPIC, 25)]


def test_an_ack_of_a_message_no_stream_processed_is_refused():
    # faust's pure-Python stream acks the records it skips (flow stopped, stale generation)
    safe = _consumer(SafeCommitConsumer, committed=5, acked=[], skipped=[5])
    skipped = _Msg(TOPIC, 5, tracked=False)
    assert SafeCommitConsumer.ack(safe, skipped) is False
    assert not skipped.acked and 5 in safe._delivered[TOPIC] and safe.ledger.skipped_acks == 1


def test_records_a_flow_control_resume_dropped_from_the_queues_are_fetched_again_in_order():
    # recovery sought the partition to 50 and the drain loop handed over 50..55 before recovery resumed
    # flow control, which empties every stream queue: the stream took 50, the rest waited in its queue
    safe = _consumer(SafeCommitConsumer, committed=50, acked=[], in_flight=[50], skipped=[51, 52, 53, 54, 55])
    queued = {o: _Msg(TOPIC, o, tracked=False) for o in (51, 52)}  # still referenced: the queue held them
    for offset, message in queued.items():
        safe._held[TOPIC][offset] = message
    safe.on_queues_cleared()
    assert safe._thread.sought == []  # not while a hand-over may be in progress: its read offset would win
    # one still referenced (a hand-over in progress) must not reach a stream ahead of those fetched again
    assert all(m.generation_id == consumer_module.DROPPED_GENERATION for m in queued.values())
    assert not hasattr(next(iter(safe._unacked_messages)), "generation_id")  # the stream's own one: untouched
    safe._rewind_dropped()
    assert safe._thread.sought == [(TOPIC, 51)] and safe._read_offset[TOPIC] == 51
    assert safe.ledger.cleared_rewinds == 1
    safe._rewind_dropped()  # once
    assert safe._thread.sought == [(TOPIC, 51)]


def test_a_partition_sought_since_the_queues_were_cleared_is_not_rewound():
    # a rebalance clears the queues too; recovery then seeks to the committed offset, which already
    # fetches everything again: a later rewind must not move the position forward past it
    safe = _consumer(SafeCommitConsumer, committed=50, acked=[], skipped=[53, 54])
    safe.on_queues_cleared()
    safe._thread.seek(TOPIC, 50)  # recovery's seek to committed
    safe._rewind_dropped()
    assert safe._thread.sought == [(TOPIC, 50)] and safe.ledger.cleared_rewinds == 0


def test_a_rewind_noted_before_a_seek_does_not_pull_a_later_one_back():
    safe = _consumer(SafeCommitConsumer, committed=50, acked=[], skipped=[53, 54])
    safe.on_queues_cleared()  # a rebalance's clear: 53 dropped
    safe._thread.seek(TOPIC, 50)  # recovery's seek to committed fetches 53 again
    safe._delivered[TOPIC] = {60, 61}  # 50..59 processed since; 60, 61 dropped by the next clear
    safe.on_queues_cleared()
    safe._rewind_dropped()
    assert safe._thread.sought == [(TOPIC, 50), (TOPIC, 60)] and safe.ledger.cleared_rewinds == 1


def test_a_resume_that_dropped_nothing_seeks_nothing():
    safe = _consumer(SafeCommitConsumer, committed=50, acked=[], in_flight=[50, 51])
    safe.on_queues_cleared()
    safe._rewind_dropped()
    assert safe._thread.sought == [] and safe.ledger.cleared_rewinds == 0


def test_resuming_the_apps_flow_control_empties_the_queues_and_rewinds_the_consumer():
    """mode's FlowControlEvent.resume() clears every managed queue; the app tells its consumer."""
    from mode.utils.queues import FlowControlQueue

    from streams.kafka.consumer import SafeCommitApp

    app = SafeCommitApp(f"t-{id(object())}", broker="kafka://127.0.0.1:1")
    safe = _consumer(SafeCommitConsumer, committed=7, acked=[], skipped=[7, 8])
    app._consumer = safe
    queue: FlowControlQueue = FlowControlQueue(maxsize=10, flow_control=app.flow_control, clear_on_resume=True)
    queue.put_nowait("event of offset 7")
    app.flow_control.resume()
    assert queue.empty()  # if this fails, mode no longer clears queues on resume: the hook may go
    assert safe._rewind == {TOPIC: (7, 0)}
