"""pyshm.asyncio.Slot: ``await slot.wait(after=None, timeout=None)`` (issue 21,
point 1), and a slot's readiness for other loops: fileno() with selectors,
wait_handle, pyshm.wait with slots (points 2 and 3).

Every coroutine test runs on each event loop of the platform (the
anyio_backend fixture below): the SelectorEventLoop on POSIX, and on
Windows both the default ProactorEventLoop and the SelectorEventLoop.
Ready means a generation newer than the one waited after (fileno() and
pyshm.wait: the one the object last returned or saw).
"""

import asyncio
import os
import random
import selectors
import sys
import threading

import pytest

import pyshm
import pyshm.asyncio

from .waits import DEADLINE, wait_until_in_slot_wait

WINDOWS = sys.platform == "win32"

if WINDOWS:
    LOOPS = [("asyncio", {"loop_factory": asyncio.ProactorEventLoop}),
             ("asyncio", {"loop_factory": asyncio.SelectorEventLoop})]
    LOOP_IDS = ["proactor", "selector"]
else:
    LOOPS = [("asyncio", {"loop_factory": asyncio.SelectorEventLoop})]
    LOOP_IDS = ["selector"]


@pytest.fixture(params=LOOPS, ids=LOOP_IDS)
def anyio_backend(request):
    return request.param


def os_threads():
    """Threads of this process as the OS counts them (Linux), else Python's."""
    if not WINDOWS and os.path.isdir("/proc/self/task"):
        return len(os.listdir("/proc/self/task"))
    return threading.active_count()


def open_fds():
    """Descriptors open in this process (Linux), else None (under Wine
    /proc shows the host process's, not Windows handles)."""
    if not WINDOWS and os.path.isdir("/proc/self/fd"):
        return len(os.listdir("/proc/self/fd"))
    return None


PUBLISHER = r"""
import sys, pyshm
s = pyshm.Slot(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    print(s.publish(line.strip().encode()), flush=True)
"""


@pytest.mark.anyio
async def test_a_publish_in_another_process_wakes_wait(pyshm_name, pyshm_child):
    """The coroutine waits (registered as a sleeper in the slot's header),
    another process publishes: wait returns the new generation."""
    with pyshm.asyncio.Slot(pyshm_name, create=True, size=32) as slot:
        child = pyshm_child(PUBLISHER, pyshm_name)
        child.expect("ready")
        task = asyncio.ensure_future(slot.wait())
        await asyncio.sleep(0)          # inside its wait now
        assert not task.done()
        assert slot._ready_engine in ("io_uring", "thread", "threadpool")
        child.send_line("first")
        assert await asyncio.wait_for(task, DEADLINE) == 1
        assert child.line() == "1"
        assert slot.read() == b"first"
        # after=None is the generation this object saw: the next one.
        task = asyncio.ensure_future(slot.wait(timeout=DEADLINE))
        await asyncio.sleep(0)
        child.send_line("second")
        assert await task == 2
        assert child.line() == "2"
        # An explicit after: an older generation is there at once.
        assert await slot.wait(after=0) == 2
        child.finish()


@pytest.mark.anyio
async def test_a_newer_generation_is_taken_without_waiting(pyshm_name):
    """A generation newer than AFTER comes back at once: the first try is
    the sync wait with timeout=0, no readiness is even made."""
    with pyshm.asyncio.Slot(pyshm_name, create=True, size=8) as slot, \
            pyshm.Slot(pyshm_name) as writer:
        writer.publish(b"v1")
        assert await slot.wait() == 1
        writer.publish(b"v2")
        writer.publish(b"v3")
        assert await slot.wait(after=1) == 3
        assert slot._ready_engine is None           # never needed


@pytest.mark.anyio
async def test_after_none_is_resolved_when_the_call_begins(pyshm_name):
    """wait(after=None) waits for a generation newer than the one this
    object saw when the call began, as the sync wait does: a read of a
    newer generation by another task meanwhile does not move it."""
    with pyshm.asyncio.Slot(pyshm_name, create=True, size=8) as slot, \
            pyshm.Slot(pyshm_name) as writer:
        task = asyncio.ensure_future(slot.wait())   # after 0
        await asyncio.sleep(0)
        assert not task.done()
        writer.publish(b"v1")
        assert slot.read() == b"v1"                 # this object has seen 1 now
        assert await asyncio.wait_for(task, DEADLINE) == 1


@pytest.mark.anyio
async def test_timeouts_leave_nothing_behind(pyshm_name):
    with pyshm.asyncio.Slot(pyshm_name, create=True, size=8) as slot, \
            pyshm.Slot(pyshm_name) as writer:
        with pytest.raises(TimeoutError, match="no generation after 0"):
            await slot.wait(timeout=0)
        with pytest.raises(TimeoutError, match="no generation after 0"):
            await slot.wait(timeout=0.05)
        # asyncio's own timeout cancels the wait.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slot.wait(), 0.05)
        assert slot._waits.count == 0 and not slot._waits.futures
        assert slot._take() == 0                # nothing armed fires
        writer.publish(b"later")
        assert slot._take() == 0
        assert await slot.wait(timeout=DEADLINE) == 1


ACKED_PUBLISHER = r"""
import sys, pyshm
values, acks = pyshm.Slot(sys.argv[1]), pyshm.Slot(sys.argv[2])
n = int(sys.argv[3])
print("ready", flush=True)
for g in range(1, n + 1):
    assert values.publish(b"%d" % g) == g
    # The next one only once the parent has seen this one.
    acks.wait(after=g - 1, timeout=60)
print("done", flush=True)
"""


@pytest.mark.anyio
async def test_cancellation_at_random_instants_misses_no_publish(pyshm_names, pyshm_child):
    """Waits cancelled or timed out at random instants while another process
    publishes: the next wait never misses a publish (no registration left
    behind, no wake lost), and every generation is seen exactly once, in
    order (the publisher waits for the parent's ack of each)."""
    n = 600
    rnd = random.Random(21)
    values, acks = pyshm_names(), pyshm_names()
    with pyshm.asyncio.Slot(values, create=True, size=16) as slot, \
            pyshm.Slot(acks, create=True, size=8) as ack:
        child = pyshm_child(ACKED_PUBLISHER, values, acks, n)
        child.expect("ready")
        seen = []
        cancels = 0
        while len(seen) < n:
            last = seen[-1] if seen else 0
            task = asyncio.ensure_future(slot.wait(after=last))
            for _ in range(rnd.randrange(4)):
                await asyncio.sleep(0)
            how = rnd.randrange(3)
            if how == 0 and not task.done():
                task.cancel()
            try:
                if how == 1:
                    g = await asyncio.wait_for(task, rnd.choice([0, 1e-5, 1e-4]))
                else:
                    # No timeout of its own: a lost wake hangs here (and the
                    # test's deadline says so).
                    g = await asyncio.wait_for(task, DEADLINE)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                cancels += 1
                continue
            assert g == last + 1, (g, last)
            assert slot.read() == b"%d" % g
            seen.append(g)
            ack.publish(b"ack")
        child.expect("done")
        child.finish()
    assert seen == list(range(1, n + 1))
    assert cancels > 0


@pytest.mark.anyio
async def test_many_slots_awaited_at_once_run_no_extra_threads(pyshm_names):
    """Fifty slots awaited at once by one loop: no thread per waiting object
    (io_uring: not one more; the watcher-thread engine: one for the
    process; Windows: no Python thread, the proactor's own waits)."""
    names = [pyshm_names() for _ in range(50)]
    slots = [pyshm.asyncio.Slot(n, create=True, size=8) for n in names]
    try:
        before = os_threads()
        py_before = threading.active_count()
        tasks = [asyncio.ensure_future(s.wait()) for s in slots]
        for _ in range(3):
            await asyncio.sleep(0)
        assert not any(t.done() for t in tasks)
        during = os_threads()
        engine = slots[0]._ready_engine
        assert threading.active_count() == py_before
        if engine == "io_uring":
            assert during == before
        elif engine == "thread":
            assert during <= before + 1
        writers = [pyshm.Slot(n) for n in names]
        for i in random.sample(range(50), 50):
            writers[i].publish(b"%d" % i)
        assert await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE) == [1] * 50
        assert [s.read() for s in slots] == [b"%d" % i for i in range(50)]
        for w in writers:
            w.close()
    finally:
        for s in slots:
            s.close()


@pytest.mark.anyio
async def test_close_while_awaiting_ends_the_wait(pyshm_name):
    """close() from another task, or from another thread, ends every wait of
    the object with ValueError; its descriptor goes with the last one."""
    fds = open_fds()
    slot = pyshm.asyncio.Slot(pyshm_name, create=True, size=8)
    keeper = pyshm.Slot(pyshm_name)     # Windows: the name lives while a handle does
    tasks = [asyncio.ensure_future(slot.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    slot.close()
    for t in tasks:
        with pytest.raises(ValueError, match="closed"):
            await asyncio.wait_for(t, DEADLINE)
    slot = pyshm.asyncio.Slot(pyshm_name)
    task = asyncio.ensure_future(slot.wait(timeout=DEADLINE))
    await asyncio.sleep(0)
    closer = threading.Thread(target=slot.close)
    closer.start()
    with pytest.raises(ValueError, match="closed"):
        await asyncio.wait_for(task, DEADLINE)
    closer.join()
    keeper.close()
    if fds is not None:
        assert open_fds() == fds


def test_loop_closed_under_a_waiting_coroutine(pyshm_name):
    """A loop closed while a coroutine waits (its task never resumes): the
    object works in the next loop and leaks no descriptor."""
    fds = open_fds()
    with pyshm.asyncio.Slot(pyshm_name, create=True, size=8) as slot:
        loop = asyncio.new_event_loop()
        task = loop.create_task(slot.wait())
        loop.run_until_complete(asyncio.sleep(0.01))
        assert not task.done()
        loop.close()
        with pyshm.Slot(pyshm_name) as writer:
            writer.publish(b"next")
        assert asyncio.run(asyncio.wait_for(slot.wait(), DEADLINE)) == 1
        del task
    if fds is not None:
        assert open_fds() == fds


# ---- bad input ----------------------------------------------------------------

@pytest.mark.anyio
async def test_bad_input(pyshm_name):
    with pyshm.asyncio.Slot(pyshm_name, create=True, size=8) as slot:
        with pytest.raises(ValueError, match="timeout must not be negative"):
            await slot.wait(timeout=-1)
        with pytest.raises(TypeError, match="timeout must be a number"):
            await slot.wait(timeout="1")
        with pytest.raises(TypeError, match="after must be an int or None, not 'str'"):
            await slot.wait(after="1")
        with pytest.raises(ValueError, match="after must not be negative"):
            await slot.wait(after=-1)
        assert slot._ready_engine is None       # nothing was armed for them
    with pytest.raises(ValueError, match="closed"):
        await slot.wait()
    with pytest.raises(ValueError, match="closed"):
        slot.fileno()
    with pytest.raises(ValueError, match="closed"):
        slot.wait_handle


def test_awaiting_from_a_loop_in_another_thread(pyshm_name):
    """An object's waits belong to one loop at a time: awaiting it from a
    loop in another thread while the first still waits is RuntimeError."""
    with pyshm.asyncio.Slot(pyshm_name, create=True, size=8) as slot:
        started = threading.Event()
        results = []

        async def first():
            task = asyncio.ensure_future(slot.wait(timeout=DEADLINE))
            await asyncio.sleep(0)
            started.set()
            results.append(await task)

        thread = threading.Thread(target=lambda: asyncio.run(first()))
        thread.start()
        assert started.wait(DEADLINE)

        async def second():
            await slot.wait(timeout=DEADLINE)

        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(second())
        with pyshm.Slot(pyshm_name) as writer:
            writer.publish(b"first")
        thread.join(DEADLINE)
        assert results == [1]


# ---- fileno() and pyshm.wait --------------------------------------------------

def test_fileno_protocol_with_selectors(pyshm_name):
    """Readable when a newer generation may exist; after wait(timeout=0)
    until TimeoutError it is armed again and not readable."""
    with pyshm.Slot(pyshm_name, create=True, size=8) as slot, \
            pyshm.Slot(pyshm_name) as writer, selectors.DefaultSelector() as sel:
        sel.register(slot, selectors.EVENT_READ)
        assert sel.select(0) == []
        writer.publish(b"one")
        writer.publish(b"two")
        assert [key.fileobj for key, _ in sel.select(DEADLINE)] == [slot]
        got = []
        while True:
            try:
                got.append(slot.wait(timeout=0))
            except TimeoutError:
                break
        assert got == [2] and slot.read() == b"two"
        assert sel.select(0) == []          # armed again, nothing new
        writer.publish(b"three")
        assert sel.select(DEADLINE) != []
        assert slot.wait(timeout=0) == 3
        sel.unregister(slot)
        assert isinstance(slot.wait_handle, int)


def test_fileno_is_ready_at_once_for_a_generation_not_seen(pyshm_name):
    with pyshm.Slot(pyshm_name, create=True, size=8) as slot:
        pyshm.Slot(pyshm_name).publish(b"early")
        with selectors.DefaultSelector() as sel:
            sel.register(slot, selectors.EVENT_READ)
            assert sel.select(DEADLINE) != []
            sel.unregister(slot)


WAIT_PUBLISHER = r"""
import sys, pyshm
slot = pyshm.Slot(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
slot.publish(b"wake")
"""


def test_pyshm_wait_with_slots_and_channels(pyshm_names, pyshm_child):
    """pyshm.wait over slots and channels: the ready subset in the order
    given (a channel with a message queued, a slot with a generation newer
    than it saw), and a slot published in another process wakes it."""
    slots = [pyshm.Slot(pyshm_names(), create=True, size=8) for _ in range(3)]
    chans = [pyshm.Channel(pyshm_names(), create=True, capacity=256) for _ in range(2)]
    objects = [slots[0], chans[0], slots[1], chans[1], slots[2]]
    try:
        assert pyshm.wait(objects, timeout=0) == []
        pyshm.Slot(slots[2].name).publish(b"x")
        pyshm.Channel(chans[0].name).send(b"y")
        assert pyshm.wait(objects, timeout=DEADLINE) == [chans[0], slots[2]]
        slots[2].read()                         # seen: no longer ready
        chans[0].recv(timeout=0)
        assert pyshm.wait(objects, timeout=0.02) == []
        child = pyshm_child(WAIT_PUBLISHER, slots[1].name)
        child.expect("ready")
        result = []
        waiter = threading.Thread(target=lambda: result.append(pyshm.wait(objects, DEADLINE)))
        waiter.start()
        wait_until_in_slot_wait(slots[1].name, waiter.native_id)
        child.send_line("go")
        waiter.join(DEADLINE)
        assert result == [[slots[1]]]
        assert slots[1].wait(timeout=0) == 1
        child.finish()
    finally:
        for o in objects:
            o.close()


def test_pyshm_wait_bad_input_names_slots(pyshm_name):
    with pyshm.Slot(pyshm_name, create=True, size=8) as slot:
        with pytest.raises(TypeError, match="is not a pyshm Channel or Slot"):
            pyshm.wait([slot, 42])
        with pytest.raises(ValueError, match="timeout must not be negative"):
            pyshm.wait([slot], timeout=-0.5)
    with pytest.raises(ValueError, match="operation on a closed Slot"):
        pyshm.wait([slot], timeout=0)


# ---- a process killed while awaiting --------------------------------------------

ASYNC_WAITER = r"""
import asyncio, sys, pyshm.asyncio
async def main():
    s = pyshm.asyncio.Slot(sys.argv[1])
    task = asyncio.ensure_future(s.wait())
    await asyncio.sleep(0)
    print("ready", s._ready_engine, flush=True)
    await task
asyncio.run(main())
"""

PUBLISH_MANY = """
import sys, pyshm
s = pyshm.Slot(sys.argv[1])
for _ in range(int(sys.argv[2])):
    s.publish(b"x" * 16)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or pyshm.CHANNEL_WAIT != "futex",
                    reason="counts futex(2) wake calls")
def test_killed_async_waiters_cost_publishers_one_wake_at_most(pyshm_name, pyshm_child,
                                                               tmp_path):
    """Async waiters killed while awaiting (armed: the waiter bit set, an
    io_uring futex wait in the kernel) leave publishers at most one
    FUTEX_WAKE, as dead sync waiters do."""
    import shutil
    if shutil.which("strace") is None:
        if os.environ.get("CI"):
            pytest.fail("strace is required in CI")
        pytest.skip("needs strace")
    publishes = 300
    trace = tmp_path / "futex.trace"
    with pyshm.Slot(pyshm_name, create=True, size=16) as s:
        for _ in range(3):
            with pyshm_child(ASYNC_WAITER, pyshm_name) as child:
                assert child.line().startswith("ready")
                wait_until_in_slot_wait(pyshm_name, child.pid, child.pid)
                child.kill()
                child.reap()
        publisher = pyshm_child.command("strace", "-f", "-qq", "-e", "trace=futex", "-o",
                                        str(trace), sys.executable, "-c", PUBLISH_MANY,
                                        pyshm_name, publishes)
        publisher.finish()
        assert s.generation == publishes
    wakes = [line for line in trace.read_text().splitlines() if "FUTEX_WAKE," in line]
    assert len(wakes) <= 1, f"{len(wakes)} wake calls for {publishes} publishes:\n" + \
        "\n".join(wakes)
