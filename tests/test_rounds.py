"""The ledger of decision rounds that the Kafka receiver commits behind (issue 9): a round counts as sent once
every batch it produced is settled by every exporter; a batch given up stops the count for good."""

from __future__ import annotations

from tailsample.service.pipeline import RoundLedger


def test_rounds_count_as_sent_in_order_once_settled() -> None:
    ledger = RoundLedger()
    r1, r2, r3 = ledger.begin(), ledger.begin(), ledger.begin()
    r1.hold(2)  # two exporters got a batch of round 1
    r2.settle(True)  # round 2 produced nothing
    r3.hold(1)
    r3.settle(True)
    r1.settle(True)
    assert ledger.sent_through == 0, "round 1 still has two batches out"
    r3.settle(True)
    assert ledger.sent_through == 0
    r1.settle(True)
    r1.settle(True)
    assert ledger.sent_through == 3, "rounds finishing out of order count once the run is unbroken"
    r4 = ledger.begin()
    assert ledger.sent_through == 3
    r4.settle(True)
    assert ledger.sent_through == 4


def test_a_batch_given_up_stops_the_run() -> None:
    ledger = RoundLedger()
    r1, r2 = ledger.begin(), ledger.begin()
    r1.hold()
    r1.settle(True)
    r1.settle(False)  # one batch of round 1 was given up
    r2.settle(True)
    assert ledger.sent_through == 0 and ledger.failed_at == 1
    r3 = ledger.begin()
    r3.settle(True)
    assert ledger.sent_through == 0, "nothing behind a round that lost a batch counts as sent"
