from bridge.settings import PoolSettings
from bridge.silma.pool_core import PoolCore, SlotState

LIMITS = PoolSettings(size=5, warm=3, max_age_s=300.0, backoff_base_s=0.5, backoff_max_s=30.0)


def warm_pool(now: float = 0.0, capacity: int = 1) -> PoolCore:
    core = PoolCore(LIMITS, rng=lambda: 1.0)
    plan = core.plan(now)
    assert plan.open == 3
    for _ in range(plan.open):
        core.connected(core.new_slot(now).id, now, capacity)
    return core


def test_warm_up_opens_the_warm_minimum_only():
    core = warm_pool()
    assert core.count(SlotState.READY) == 3
    assert core.plan(0.0).open == 0


def test_free_connection_granted_at_once():
    core = warm_pool()
    plan = core.want(1, 1.0)
    assert len(plan.grant) == 1 and plan.grant[0][0] == 1
    assert core.in_use == 1


def test_one_spare_is_opened_ahead_when_all_are_busy():
    core = warm_pool()
    for waiter in (1, 2, 3):
        core.want(waiter, 1.0)
    assert core.in_use == 3
    assert core.plan(1.0).open == 1


def test_waiters_are_served_first_come_first_served():
    core = warm_pool()
    for waiter in (1, 2, 3):
        core.want(waiter, 1.0)
    assert core.want(4, 1.0).grant == []
    assert core.want(5, 1.0).grant == []
    granted_slot = 1
    plan = core.released(granted_slot, 2.0, reusable=True)
    assert plan.grant == [(4, granted_slot)]
    assert (5 in core.waiters) and (4 not in core.waiters)


def test_waiters_make_the_pool_grow_but_never_past_size():
    core = warm_pool()
    for waiter in range(1, 10):
        core.want(waiter, 1.0)
    plan = core.plan(1.0)
    assert plan.open == 2  # 3 open + 2 = size 5
    for _ in range(plan.open):
        core.new_slot(1.0)
    assert core.plan(1.0).open == 0


def test_timed_out_waiter_is_forgotten():
    core = warm_pool()
    for waiter in (1, 2, 3, 4):
        core.want(waiter, 1.0)
    core.give_up(4, 2.0)
    assert core.released(1, 3.0, reusable=True).grant == []


def test_failed_request_connection_is_retired_not_reused():
    core = warm_pool()
    (_waiter, slot), = core.want(1, 1.0).grant
    plan = core.released(slot, 2.0, reusable=False)
    assert plan.close == [slot]
    assert core.slots[slot].state is SlotState.RETIRED
    assert plan.open == 1  # replacement keeps the pool warm


def test_aged_connection_is_replaced_in_background_before_it_expires():
    core = warm_pool(now=0.0)
    renew = LIMITS.renew_at_s
    assert renew < LIMITS.max_age_s
    plan = core.plan(renew + 1)
    assert plan.open == 3 and plan.close == []  # old ones still serve while new ones connect
    (_, slot), = core.want(1, renew + 1).grant
    assert core.slots[slot].created_at == 0.0
    closed = []
    for _ in range(3):
        closed += core.connected(core.new_slot(renew + 2).id, renew + 2, 1).close
    assert sorted(closed) == [s for s in (1, 2, 3) if s != slot]  # idle stale ones retire
    assert core.slots[slot].state is SlotState.READY  # the leased one stays until released
    assert core.released(slot, renew + 4, reusable=True).close == [slot]


def test_expired_connection_never_handed_out():
    core = warm_pool(now=0.0)
    plan = core.want(1, LIMITS.max_age_s + 1)
    assert plan.grant == []
    assert sorted(plan.close) == [1, 2, 3]


def test_health_failure_retires_idle_connection():
    core = warm_pool()
    plan = core.health(2, 10.0, ok=False, detail="ping timeout")
    assert plan.close == [2]
    assert core.slots[2].last_health == "ping timeout"


def test_backoff_grows_exponentially_and_probes_one_at_a_time():
    core = PoolCore(LIMITS, rng=lambda: 1.0)
    assert core.plan(0.0).open == 3
    slots = [core.new_slot(0.0).id for _ in range(3)]
    core.connect_failed(slots[0], 0.0)
    assert core.retry_at == 0.5
    core.connect_failed(slots[1], 0.1)
    assert core.retry_at == 0.1 + 1.0
    core.connect_failed(slots[2], 0.2)
    assert core.retry_at == 0.2 + 2.0
    assert core.plan(1.0).open == 0  # still backing off: no spinning
    assert core.plan(2.3).open == 1  # one probe, not three
    probe = core.new_slot(2.3).id
    assert core.plan(2.3).open == 0
    plan = core.connected(probe, 2.4, 1)
    assert plan.open == 2 and core.failures_in_a_row == 0  # server back: refill


def test_backoff_is_capped_and_jittered():
    core = PoolCore(LIMITS, rng=lambda: 0.0)
    for i in range(20):
        core.connect_failed(core.new_slot(float(i)).id, float(i))
    assert core.retry_at == 19.0 + 30.0 * 0.5


def test_multiplexing_connections_carry_several_requests():
    core = warm_pool(capacity=4)
    grants = [core.want(w, 1.0).grant[0] for w in range(1, 7)]
    slots_used = {slot for _, slot in grants}
    assert len(slots_used) == 3  # spread over the warm connections, least loaded first
    assert core.plan(1.0).open == 0  # spare capacity remains: no new sockets


def test_close_retires_idle_and_opens_nothing():
    core = warm_pool()
    (_, busy), = core.want(1, 1.0).grant
    plan = core.close(2.0)
    assert len(plan.close) == 2 and plan.open == 0
    assert core.released(busy, 3.0, reusable=True).close == [busy]


def test_next_deadline_is_the_earliest_renewal():
    core = warm_pool(now=5.0)
    assert core.next_deadline(6.0) == 5.0 + LIMITS.renew_at_s


def test_a_connection_closed_as_soon_as_it_opened_backs_off_like_a_failed_connect():
    # SILMA's cloud closes a socket with a refused key right after the upgrade: reconnecting at
    # once, each time, would be a tight loop against it.
    core = PoolCore(LIMITS, rng=lambda: 1.0)
    now = 0.0
    for delay in (0.5, 1.0, 2.0):
        assert core.plan(now).open >= 1
        slot = core.new_slot(now).id
        core.connected(slot, now, 1)
        plan = core.lost(slot, now + 0.01)
        assert plan.open == 0 and core.retry_at == now + 0.01 + delay
        now = core.retry_at
        core.forget(slot)
    # One connection that lives on resets it: a later loss reconnects at once.
    slot = core.new_slot(now).id
    core.connected(slot, now, 1)
    assert core.lost(slot, now + 5.0).open >= 1 and core.quick_losses == 0


def test_a_connection_that_served_a_request_is_lost_not_refused():
    core = warm_pool()
    grant = core.want(1, 0.1).grant[0][1]
    core.released(grant, 0.2, reusable=True)
    assert core.lost(grant, 0.3).open == 1 and core.quick_losses == 0
