"""When a queued run probably starts: the claim rule replayed on the jobs' estimates."""

from __future__ import annotations

from datamill.domain.estimate import Busy, Pending, QueueShape, Spot, expected_starts


def test_runs_start_as_slots_free_up_in_queue_order() -> None:
    running = [Busy(1, 10, "ann", 10.0)]
    pending = [Pending(2, 20, "ann", 20.0), Pending(3, 30, "ann", 5.0)]
    assert expected_starts(running, pending, slots=1) == {2: Spot(1, 10.0), 3: Spot(2, 30.0)}


def test_a_free_slot_starts_the_next_run_now() -> None:
    running = [Busy(1, 10, "ann", 10.0)]
    pending = [Pending(2, 20, "ann", 20.0), Pending(3, 30, "ann", 5.0)]
    assert expected_starts(running, pending, slots=2) == {2: Spot(1, 0.0), 3: Spot(2, 10.0)}


def test_a_run_waits_for_the_running_run_of_its_own_job_and_others_overtake_it() -> None:
    running = [Busy(1, 10, "ann", 50.0)]
    pending = [Pending(2, 10, "ann", 50.0), Pending(3, 30, "ann", 5.0), Pending(4, 10, "ann", 1.0)]
    spots = expected_starts(running, pending, slots=2)
    # 3 takes the free slot at once; 2 waits for 1, and 4 for 2.
    assert spots == {3: Spot(1, 0.0), 2: Spot(2, 50.0), 4: Spot(3, 100.0)}


def test_fair_shares_give_the_next_slot_to_the_user_holding_fewer() -> None:
    running = [Busy(1, 10, "eve", 10.0), Busy(2, 20, "eve", 100.0)]
    pending = [Pending(3, 30, "eve", 5.0), Pending(4, 40, "bob", 5.0)]
    fair = expected_starts(running, pending, slots=2)
    assert fair == {4: Spot(1, 10.0), 3: Spot(2, 15.0)}
    oldest_first = expected_starts(running, pending, slots=2, fair_shares=False)
    assert oldest_first == {3: Spot(1, 10.0), 4: Spot(2, 15.0)}


def test_a_waiting_run_joins_the_queue_when_its_upstream_ends() -> None:
    pending = [
        Pending(1, 10, "ann", 30.0),
        Pending(2, 20, "ann", 10.0, waits_on=(1,)),
        Pending(3, 30, "ann", 5.0),
    ]
    spots = expected_starts([], pending, slots=2)
    assert spots == {1: Spot(1, 0.0), 3: Spot(2, 0.0), 2: Spot(3, 30.0)}
    # An upstream no longer active has ended: the run is as good as queued.
    assert expected_starts([], [Pending(5, 50, "ann", 1.0, waits_on=(4,))], slots=1) == {
        5: Spot(1, 0.0)
    }


def test_unknown_durations_count_as_the_mean_of_the_known_ones() -> None:
    running = [Busy(1, 10, "ann", None)]  # no estimate: counted as ending now
    pending = [
        Pending(2, 20, "ann", None),
        Pending(3, 30, "ann", 10.0),
        Pending(4, 40, "ann", 30.0),
    ]
    spots = expected_starts(running, pending, slots=1)
    assert spots == {2: Spot(1, 0.0), 3: Spot(2, 20.0), 4: Spot(3, 30.0)}


def test_without_a_slot_the_order_is_given_but_no_time() -> None:
    pending = [Pending(2, 20, "ann", 20.0), Pending(3, 30, "ann", 5.0)]
    assert expected_starts([], pending, slots=0) == {2: Spot(1, None), 3: Spot(2, None)}


def test_the_slots_are_the_workers_times_their_concurrency_within_the_global_limit() -> None:
    assert QueueShape(slots_per_worker=2).slots(3) == 6
    assert QueueShape(slots_per_worker=2, max_running=4).slots(3) == 4
    assert QueueShape(slots_per_worker=2, max_running=4).slots(0) == 0
