"""The consumer never commits past an in-flight message (faust-streaming #606).

These drive the real consumer class's offset bookkeeping with the exact
states from the upstream report; the stock 0.15.3 logic is run beside it to
show the loss it would cause.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from faust.transport.drivers.aiokafka import Consumer as StockConsumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.consumer import SafeCommitConsumer

TOPIC = TP("news.items", 0)


@dataclass(eq=False)
class _Msg:
    tp: TP
    offset: int
    acked: bool = False


def _consumer(cls, committed, acked, in_flight=(), gaps=()):
    consumer = object.__new__(cls)  # bookkeeping only: no broker connection needed
    consumer._acked = defaultdict(list, {TOPIC: sorted(acked)})
    consumer._acked_index = defaultdict(set, {TOPIC: set(acked)})
    consumer._committed_offset = defaultdict(lambda: None, {TOPIC: committed})
    consumer._gap = defaultdict(IntervalTree)
    for begin, end in gaps:
        consumer._gap[TOPIC].addi(begin, end)
    consumer._unacked_messages = {_Msg(TOPIC, o) for o in in_flight}
    return consumer


def test_head_message_in_flight_blocks_commit():
    # committed=2585 (next to read), 2585 still processing, 2586..2589 acked
    state = dict(committed=2585, acked=[2586, 2587, 2588, 2589], in_flight=[2585])
    assert StockConsumer._new_offset(_consumer(StockConsumer, **state), TOPIC) == 2590  # would lose 2585
    assert SafeCommitConsumer._new_offset(_consumer(SafeCommitConsumer, **state), TOPIC) is None


def test_fresh_group_with_out_of_order_batches_does_not_skip_first_batch():
    # no commit yet; batch 0..15 in flight, batch 16..31 acked first (concurrency > 1)
    state = dict(committed=None, acked=list(range(16, 32)), in_flight=list(range(16)))
    assert StockConsumer._new_offset(_consumer(StockConsumer, **state), TOPIC) == 32  # would lose 0..15
    safe = _consumer(SafeCommitConsumer, **state)
    assert SafeCommitConsumer._new_offset(safe, TOPIC) is None
    # once the first batch is acked, everything is committable and nothing is forgotten
    safe._unacked_messages = set()
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


def test_gap_before_a_delivered_message_excludes_that_message():
    import asyncio

    stock = _consumer(StockConsumer, committed=10, acked=[])
    safe = _consumer(SafeCommitConsumer, committed=10, acked=[])
    # faust calls _add_gap(tp, last_read + 1, offset_of_message_being_delivered)
    asyncio.run(StockConsumer._add_gap(stock, TOPIC, 11, 14))
    asyncio.run(SafeCommitConsumer._add_gap(safe, TOPIC, 11, 14))
    assert stock._gap[TOPIC].overlaps(14)  # stock: the delivered message counts as a hole
    assert not safe._gap[TOPIC].overlaps(14)
    assert all(safe._gap[TOPIC].overlaps(o) for o in (11, 12, 13))
