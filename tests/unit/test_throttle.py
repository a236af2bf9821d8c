"""The shared throttle: AIMD limits and a pause every thread obeys."""

from __future__ import annotations

import threading
import time

from eachlabs_loader.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_halves_once_per_pause_and_successes_grow_it_back():
    clock = Clock()
    throttle = Throttle(8, clock=clock)
    for _ in range(5):  # a burst of 429s from one overload
        throttle.record_rate_limited(retry_after=2.0)
    assert throttle.limit == 4 and throttle.decreases == 1
    clock.now += 2.5
    throttle.record_rate_limited(retry_after=None)  # a new overload after the pause
    assert throttle.limit == 2 and throttle.lowest_limit == 2
    for _ in range(3):
        throttle.record_success()
    assert 2 < throttle.limit < 4  # additive: about one slot per `limit` successes
    for _ in range(100):
        throttle.record_success()
    assert throttle.limit == 8


def test_limit_never_drops_below_one():
    clock = Clock()
    throttle = Throttle(2, clock=clock)
    for _ in range(10):
        throttle.record_rate_limited(retry_after=0.0)
        clock.now += 1
    assert throttle.limit == 1


def test_slots_cap_requests_in_flight():
    throttle = Throttle(3)
    peak, current, lock = [0], [0], threading.Lock()

    def work() -> None:
        with throttle.slot():
            with lock:
                current[0] += 1
                peak[0] = max(peak[0], current[0])
            time.sleep(0.02)
            with lock:
                current[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 3


def test_a_pause_holds_new_requests_from_every_thread_but_not_retries():
    throttle = Throttle(4)
    throttle.record_rate_limited(retry_after=0.3)
    waited: list[float] = []

    def request(retry: bool) -> None:
        begin = time.monotonic()
        with throttle.slot(retry=retry):
            waited.append(time.monotonic() - begin)

    request(retry=True)  # its retry policy waited already: the gate does not decide that
    thread = threading.Thread(target=request, args=(True,))
    thread.start()
    thread.join()
    assert waited[0] < 0.1 and waited[1] < 0.1
    thread = threading.Thread(target=request, args=(False,))  # a new request elsewhere
    thread.start()
    thread.join()
    assert waited[2] >= 0.15
    throttle.record_rate_limited(retry_after=0.3)  # a new pause
    request(retry=False)  # a new request from the thread that saw the 429 waits too
    assert waited[3] >= 0.2


def test_a_huge_retry_after_pauses_no_longer_than_the_cap():
    clock = Clock()
    throttle = Throttle(4, max_pause_s=2.0, clock=clock)
    throttle.record_rate_limited(retry_after=86_400)
    assert throttle.paused_s == 2.0
