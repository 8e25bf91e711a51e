"""pyshm.asyncio.Channel: awaited sends and receives (issue 21, point 1).

Every test runs on each event loop of the platform (the anyio_backend
fixture below): the SelectorEventLoop on POSIX, and on Windows both the
default ProactorEventLoop and the SelectorEventLoop.  fileno(), wait_handle
and pyshm.wait are in test_readiness.py.
"""

import asyncio
import os
import random
import sys
import threading

import pytest

import pyshm
import pyshm.asyncio

from .waits import DEADLINE, wait_until_sleeping

WINDOWS = sys.platform == "win32"
pytestmark = pytest.mark.anyio

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


SENDER = r"""
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[2])):
    c.send(b"%d" % i, timeout=60)
print("sent", flush=True)
"""


async def test_awaited_messages_from_another_process(pyshm_name, pyshm_child):
    """Each kind of receive awaits a message that another process sends
    after the coroutine has started waiting."""
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=4096) as ch:
        child = pyshm_child(SENDER, pyshm_name, 3)
        child.expect("ready")
        task = asyncio.ensure_future(ch.recv())
        await asyncio.sleep(0)          # the task is inside its wait now
        assert not task.done()
        child.send_line("go")
        assert await asyncio.wait_for(task, DEADLINE) == b"0"
        buf = bytearray(16)
        assert await ch.recv_into(buf, timeout=DEADLINE) == 1 and buf[:1] == b"1"
        assert await ch.recv(timeout=DEADLINE) == b"2"
        child.expect("sent")
        child.finish()
        await ch.send_obj({"x": [1, 2]})
        assert await ch.recv_obj() == {"x": [1, 2]}
        assert ch._ready_engine in ("io_uring", "thread", "threadpool")


async def test_ready_message_is_taken_without_waiting(pyshm_name):
    """A queued message comes back at once: the first try is the sync call
    with timeout=0, no readiness is even made."""
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=4096) as ch:
        pyshm.Channel.send(ch, b"there")
        assert await ch.recv() == b"there"
        assert ch._ready_engine is None         # never needed
        await ch.send(b"room")                  # room: no wait either
        assert ch._ready_engine is None
        assert pyshm.Channel.recv(ch, 0) == b"room"


async def test_timeouts(pyshm_name):
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=64) as ch:
        with pytest.raises(TimeoutError, match="no message"):
            await ch.recv(timeout=0)
        with pytest.raises(TimeoutError, match="no message"):
            await ch.recv(timeout=0.05)
        with pytest.raises(TimeoutError):
            await ch.recv_obj(timeout=0.01)
        await ch.send(bytes(48))
        with pytest.raises(TimeoutError):
            await ch.send(bytes(48), timeout=0.05)
        assert ch.messages == 1                 # nothing of the timed-out send
        # asyncio's own timeouts cancel the wait: nothing is lost either.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ch.send(bytes(48)), 0.05)
        assert ch.messages == 1
        assert await ch.recv() == bytes(48)


async def test_many_channels_awaited_at_once_run_no_extra_threads(pyshm_names):
    """100 channels awaited at once by one loop: no thread per waiting object.
    With io_uring (Linux) not one thread more; the watcher thread engine
    (io_uring refused, the portable build) has one for the process; Windows
    counts Python threads (the system thread pool's waits are the
    proactor's own mechanism)."""
    names = [pyshm_names() for _ in range(100)]
    chans = [pyshm.asyncio.Channel(n, create=True, capacity=256) for n in names]
    try:
        before = os_threads()
        py_before = threading.active_count()
        tasks = [asyncio.ensure_future(c.recv()) for c in chans]
        for _ in range(3):
            await asyncio.sleep(0)
        assert not any(t.done() for t in tasks)
        during = os_threads()
        engine = chans[0]._ready_engine
        assert threading.active_count() == py_before
        if engine == "io_uring":
            assert during == before
        elif engine == "thread":
            assert during <= before + 1
        senders = [pyshm.Channel(n) for n in names]
        for i in random.sample(range(100), 100):
            senders[i].send(b"%d" % i)
        got = await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)
        assert got == [b"%d" % i for i in range(100)]
        assert os_threads() == during
        for s in senders:
            s.close()
    finally:
        for c in chans:
            c.close()


COUNTER = r"""
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
n = int(sys.argv[2])
print("ready", flush=True)
for i in range(n):
    c.send(b"%d" % i, timeout=60)
print("sent", flush=True)
"""


async def test_cancellation_at_random_instants_loses_nothing(pyshm_name, pyshm_child):
    """Receives cancelled or timed out at random instants while another
    process sends: every message is delivered exactly once."""
    n = 2000
    rnd = random.Random(21)
    got = []
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=512) as ch:
        child = pyshm_child(COUNTER, pyshm_name, n)
        child.expect("ready")
        cancels = 0
        while len(got) < n:
            task = asyncio.ensure_future(ch.recv(timeout=DEADLINE))
            for _ in range(rnd.randrange(4)):
                await asyncio.sleep(0)
            how = rnd.randrange(3)
            if how == 0 and not task.done():
                task.cancel()
            try:
                if how == 1:
                    got.append(await asyncio.wait_for(task, rnd.choice([0, 1e-5, 1e-4])))
                else:
                    got.append(await task)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                if task.done() and not task.cancelled():
                    # asyncio.wait_for (3.12+) raises TimeoutError for a task
                    # that completed in the iteration its timeout expired:
                    # the message was received: the task holds it (or its own
                    # error, which result() raises).
                    got.append(task.result())
                else:
                    cancels += 1
        child.expect("sent")
        child.finish()
        assert ch.messages == 0
    assert sorted(int(x) for x in got) == list(range(n))
    assert cancels > 0


DRAINER = r"""
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
total = 0
while True:
    m = c.recv(timeout=60)
    if m == b"end":
        break
    total += len(m)
print(total, flush=True)
"""


async def test_full_channel_drained_by_another_process_while_send_awaits(pyshm_name,
                                                                         pyshm_child):
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=1024) as ch:
        sent = 0
        while True:
            try:
                pyshm.Channel.send(ch, bytes(100), 0)
                sent += 100
            except TimeoutError:
                break
        child = pyshm_child(DRAINER, pyshm_name)
        child.expect("ready")
        task = asyncio.ensure_future(ch.send(bytes(500)))
        await asyncio.sleep(0)
        assert not task.done()
        child.send_line("go")
        await asyncio.wait_for(task, DEADLINE)
        await ch.send_obj(list(range(50)), timeout=DEADLINE)
        await ch.send(b"end", timeout=DEADLINE)
        # The drainer took everything, the object message as its frame's bytes.
        frame = pyshm._pyshm._frame_size(list(range(50)))
        assert int(child.line()) == sent + 500 + frame
        child.finish()


async def test_sync_and_async_receivers_and_senders_mix(pyshm_name, pyshm_child):
    """An async receiver here, a sync receiver in another process, senders
    of both kinds: each message arrives once."""
    n = 600
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch:
        receiver = pyshm_child(r"""
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
print("ready", flush=True)
got = []
while True:
    m = c.recv(timeout=60)
    if m == b"end":
        break
    got.append(m.decode())
print(" ".join(got), flush=True)
""", pyshm_name)
        receiver.expect("ready")
        sender = pyshm_child(COUNTER, pyshm_name, n)
        sender.expect("ready")
        got = []

        async def sends():
            for i in range(n, 2 * n):
                await ch.send(b"%d" % i, timeout=DEADLINE)

        sending = asyncio.ensure_future(sends())
        # Receive until every sender is done and nothing is queued; the sync
        # receiver takes its share meanwhile.
        while True:
            try:
                got.append((await ch.recv(timeout=0.05)).decode())
            except TimeoutError:
                if sending.done() and sender.poll() is not None and ch.messages == 0:
                    break
        await sending
        sender.expect("sent")
        sender.finish()
        await ch.send(b"end", timeout=DEADLINE)
        theirs = receiver.line().split()
        receiver.finish()
        rest = []
    everything = sorted(int(x) for x in got + theirs + rest)
    assert everything == list(range(2 * n))


LOAN_HOLDER = r"""
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
try:
    with c.recv_view(timeout=60) as view:
        print("holding", bytes(view).decode(), flush=True)
        sys.stdin.readline()
        raise KeyError("leave it queued")
except KeyError:
    pass
print("let go", flush=True)
sys.stdin.readline()
"""


async def test_message_queued_behind_another_receivers_loan(pyshm_name, pyshm_child):
    """Another process holds the receive lock (a recv_view block) over the
    only queued message, then lets it go without taking it: no sender moves
    the data word, yet the awaiting receive gets the message (it waits for
    the lock too)."""
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch:
        pyshm.Channel.send(ch, b"only")
        holder = pyshm_child(LOAN_HOLDER, pyshm_name)
        holder.expect("holding only")
        # No timeout of its own: its last try at the deadline would hide a
        # missing wake.
        task = asyncio.ensure_future(ch.recv())
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()
        holder.send_line("go")
        holder.expect("let go")
        assert await asyncio.wait_for(task, DEADLINE) == b"only"
        holder.finish()


async def test_a_fileno_take_keeps_an_awaited_sends_readiness(pyshm_name):
    """fileno() in use on an object whose send is awaited: a receive's
    TimeoutError re-arms the descriptor (fileno()'s protocol), consuming
    what was ready -- room for the awaited send among it.  That readiness
    is made again, so the send still wakes."""
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch, \
            pyshm.Channel(pyshm_name) as peer:
        ch.fileno()
        while True:
            try:
                pyshm.Channel.send(ch, bytes(56), 0)
            except TimeoutError:
                break
        task = asyncio.ensure_future(ch.send(bytes(56)))
        await asyncio.sleep(0)
        assert not task.done()              # armed for room
        while True:                         # room now (the space word moves)
            try:
                peer.recv(timeout=0)
            except TimeoutError:
                break
        with pytest.raises(TimeoutError):   # the take's TimeoutError: re-armed
            pyshm.Channel.recv(ch, 0)
        await asyncio.wait_for(task, DEADLINE)
        assert peer.recv(timeout=0) == bytes(56)


async def test_close_while_awaiting_ends_the_wait(pyshm_name):
    """close() from another task, or from another thread, ends every wait of
    the object with ValueError; its descriptor goes with the last one."""
    fds = open_fds()
    ch = pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256)
    keeper = pyshm.Channel(pyshm_name)     # Windows: the name lives while a handle does
    tasks = [asyncio.ensure_future(ch.recv()), asyncio.ensure_future(ch.recv_obj())]
    await asyncio.sleep(0)
    ch.close()
    for t in tasks:
        with pytest.raises(ValueError, match="closed"):
            await asyncio.wait_for(t, DEADLINE)
    ch = pyshm.asyncio.Channel(pyshm_name)
    pyshm.Channel.send(ch, bytes(248 - 8))     # full: a send waits
    task = asyncio.ensure_future(ch.send(b"x"))
    await asyncio.sleep(0)
    closer = threading.Thread(target=ch.close)
    closer.start()
    with pytest.raises(ValueError, match="closed"):
        await asyncio.wait_for(task, DEADLINE)
    closer.join()
    keeper.close()
    if fds is not None:
        assert open_fds() == fds


async def test_close_from_another_thread_at_random_instants_of_a_wait(pyshm_names):
    """close() from another thread at random instants of a receive that
    waits -- its spin without the GIL, its arm, its sleep: the coroutine
    ends with ValueError (or its message), nothing crashes, no descriptor
    stays behind."""
    fds = open_fds()
    rnd = random.Random(7)
    for i in range(100):
        name = pyshm_names()
        keeper = pyshm.Channel(name, create=True, capacity=256)
        ch = pyshm.asyncio.Channel(name)
        delay = rnd.choice([0, 0, 1e-6, 1e-5, 1e-4])
        closer = threading.Timer(delay, ch.close)
        task = asyncio.ensure_future(ch.recv())
        closer.start()
        try:
            await asyncio.wait_for(task, DEADLINE)
            pytest.fail("nothing was sent")
        except ValueError as e:
            assert "closed" in str(e)
        closer.join()
        ch.close()
        keeper.close()
    if fds is not None:
        assert open_fds() == fds


async def test_cancelled_waits_leave_no_registration(pyshm_name):
    """The last waiter of an object takes its registrations back and lets go
    of the loop: after cancelled waits nothing is armed, and the object's
    next use in another loop works."""
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch:
        tasks = [asyncio.ensure_future(ch.recv()) for _ in range(3)]
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert ch._waits.count == 0 and not ch._waits.futures
        assert ch._take() == 0          # nothing fired, nothing armed fires
        pyshm.Channel.send(ch, b"later")
        assert ch._take() == 0


async def test_the_loops_registration_serves_wait_after_wait(pyshm_name):
    """A coroutine that awaits message after message registers the object
    with the loop once (no add_reader/remove_reader per message), while
    nothing stays registered in the shared header between its waits."""
    loop = asyncio.get_running_loop()
    if not hasattr(loop, "add_reader") or getattr(loop, "_proactor", None) is not None:
        pytest.skip("the ProactorEventLoop has no add_reader (its waits are the proactor's)")
    calls = []
    add_reader = loop.add_reader

    def counting(*args):
        calls.append(args[0])
        return add_reader(*args)

    loop.add_reader = counting
    try:
        with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch, \
                pyshm.Channel(pyshm_name) as peer:
            for i in range(20):
                # Sent once the receive waits (the loop's next round).
                loop.call_soon(peer.send, b"%d" % i)
                assert await ch.recv(timeout=DEADLINE) == b"%d" % i
                assert ch._take() == 0          # nothing armed between waits
            assert len(calls) == 1
            # Left idle, the registration goes (its timer: a deadline here).
            end = loop.time() + DEADLINE
            while not ch._waits.over:
                assert loop.time() < end, "the idle registration stayed"
                await asyncio.sleep(0.01)
            assert not ch._waits.registered
    finally:
        del loop.add_reader


async def test_close_right_after_a_wait_closes_the_descriptor(pyshm_name):
    fds = open_fds()
    keeper = pyshm.Channel(pyshm_name, create=True, capacity=256)
    ch = pyshm.asyncio.Channel(pyshm_name)
    task = asyncio.ensure_future(ch.recv())
    await asyncio.sleep(0)
    keeper.send(b"x")
    assert await asyncio.wait_for(task, DEADLINE) == b"x"
    ch.close()                                  # the loop's registration is idle now
    keeper.close()
    if fds is not None:
        assert open_fds() == fds                # the descriptor went with it, at once
    assert ch._waits.over


def watches(loop, fd):
    """Does LOOP's selector watch FD (False for the proactor, whose waits
    are pending futures)?"""
    get_map = getattr(getattr(loop, "_selector", None), "get_map", None)
    return get_map is not None and fd in get_map()


def test_a_stopped_loops_idle_registration_is_taken_over(pyshm_name):
    """A loop stopped right after a wait keeps its idle registration; a
    loop that needs the object next (here in this thread) takes it over,
    and the first loop's selector no longer watches the descriptor."""
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch, \
            pyshm.Channel(pyshm_name) as peer:
        first = asyncio.new_event_loop()
        try:
            async def once():
                asyncio.get_running_loop().call_later(0.01, peer.send, b"one")
                got = await ch.recv()
                asyncio.get_running_loop().stop()   # before the idle registration goes
                return got

            assert first.run_until_complete(once()) == b"one"
            old = ch._waits
            assert old.registered and old.count == 0 and not old.over
            fd = old.fd

            async def twice():
                asyncio.get_running_loop().call_later(0.01, peer.send, b"two")
                return await asyncio.wait_for(ch.recv(), DEADLINE)

            assert asyncio.run(twice()) == b"two"
            assert old.over and not old.registered and old.pending is None
            assert not watches(first, fd)
        finally:
            first.close()


def test_a_running_loops_idle_registration_is_taken_over(pyshm_name):
    """The loop of another thread, busy right after a wait (its idle
    registration still there), while this thread's loop awaits the object:
    this one is woken, and the other drops its reader once it runs."""
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch, \
            pyshm.Channel(pyshm_name) as peer:
        busy, release, dropped = threading.Event(), threading.Event(), threading.Event()
        other = asyncio.new_event_loop()

        async def in_other():
            asyncio.get_running_loop().call_later(0.01, peer.send, b"one")
            assert await ch.recv() == b"one"
            busy.set()
            release.wait(DEADLINE)          # busy in this step: the drop cannot run
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert not watches(other, ch_fd[0]) and old_waits[0].pending is None
            dropped.set()

        ch_fd, old_waits = [], []
        thread = threading.Thread(target=other.run_until_complete, args=(in_other(),))
        thread.start()
        try:
            assert busy.wait(DEADLINE)
            old = ch._waits
            assert old.loop is other and old.count == 0 and old.registered
            ch_fd.append(old.fd)
            old_waits.append(old)

            async def here():
                task = asyncio.ensure_future(ch.recv())
                await asyncio.sleep(0)
                assert old.over                 # taken over
                peer.send(b"two")
                return await asyncio.wait_for(task, DEADLINE)

            assert asyncio.run(here()) == b"two"
        finally:
            release.set()
            thread.join(DEADLINE)
            other.close()
        assert dropped.is_set()
        assert not old.registered


def test_take_with_an_older_token_takes_nothing(pyshm_name):
    """_take(token) of a registration another loop took over leaves the
    readiness to the new holder."""
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch:
        fd1, _, old = ch._hold()
        fd2, _, new = ch._hold()
        assert fd1 == fd2 and new != old
        assert not ch._arm(0)
        pyshm.Channel.send(ch, b"x")            # the armed watch fires
        if fd1 >= 0 and not WINDOWS:
            import select
            assert select.select([fd1], [], [], DEADLINE)[0] == [fd1]
        assert ch._take(old) == 0
        assert ch._take(new) != 0 or WINDOWS    # (Windows: the pool's callback may lag)
        ch._release()
        ch._release()


def test_loop_closed_under_a_waiting_coroutine(pyshm_name):
    """A loop closed while a coroutine waits (its task is never resumed):
    the object works in the next loop and leaks no descriptor."""
    fds = open_fds()
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch:
        loop = asyncio.new_event_loop()
        task = loop.create_task(ch.recv())
        loop.run_until_complete(asyncio.sleep(0.01))
        assert not task.done()
        loop.close()
        pyshm.Channel.send(ch, b"next loop")
        assert asyncio.run(asyncio.wait_for(ch.recv(), DEADLINE)) == b"next loop"
        del task
    if fds is not None:
        assert open_fds() == fds


def test_asyncio_run_cancels_a_waiting_task(pyshm_name):
    """asyncio.run() ending with a task still waiting cancels it: the
    coroutine ends with CancelledError and leaves nothing armed."""
    seen = []

    async def waiter(ch):
        try:
            await ch.recv()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main(ch):
        asyncio.ensure_future(waiter(ch))
        await asyncio.sleep(0.01)

    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch:
        asyncio.run(main(ch))
        assert seen == ["cancelled"]
        assert ch._waits.count == 0


# ---- bad input ----------------------------------------------------------------

async def test_bad_input(pyshm_name):
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch:
        with pytest.raises(ValueError, match="timeout must not be negative"):
            await ch.recv(timeout=-1)
        with pytest.raises(ValueError, match="timeout must not be negative"):
            await ch.send(b"x", timeout=-0.5)
        with pytest.raises(TypeError, match="timeout must be a number"):
            await ch.recv(timeout="1")
        with pytest.raises(TypeError):
            await ch.send("text")
    with pytest.raises(ValueError, match="closed"):
        await ch.recv()
    with pytest.raises(ValueError, match="closed"):
        await ch.send(b"x")


def test_awaiting_from_a_loop_in_another_thread(pyshm_name):
    """An object's waits belong to one loop at a time: awaiting it from a
    loop in another thread while the first still waits is RuntimeError."""
    with pyshm.asyncio.Channel(pyshm_name, create=True, capacity=256) as ch:
        started = threading.Event()
        results = []

        async def first():
            task = asyncio.ensure_future(ch.recv(timeout=DEADLINE))
            await asyncio.sleep(0)
            started.set()
            results.append(await task)

        thread = threading.Thread(target=lambda: asyncio.run(first()))
        thread.start()
        assert started.wait(DEADLINE)

        async def second():
            await ch.recv(timeout=DEADLINE)

        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(second())
        pyshm.Channel.send(ch, b"for the first")
        thread.join(DEADLINE)
        assert results == [b"for the first"]


# ---- a process killed while awaiting --------------------------------------------

ASYNC_RECEIVER = r"""
import asyncio, sys, pyshm.asyncio
async def main():
    c = pyshm.asyncio.Channel(sys.argv[1])
    task = asyncio.ensure_future(c.recv())
    await asyncio.sleep(0)
    print("ready", c._ready_engine, flush=True)
    await task
asyncio.run(main())
"""

WAKE_SENDER = """
import sys, pyshm
c = pyshm.Channel(sys.argv[1])
for _ in range(int(sys.argv[2])):
    c.send(b"x" * 16, timeout=0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or pyshm.CHANNEL_WAIT != "futex",
                    reason="counts futex(2) wake calls")
def test_killed_async_waiters_cost_senders_one_wake_at_most(pyshm_name, pyshm_child,
                                                            tmp_path):
    """Async receivers killed while awaiting (armed: the waiter bit set, an
    io_uring futex wait in the kernel) leave senders at most one FUTEX_WAKE,
    as dead sync waiters do; a sender with no waiter makes none."""
    import shutil
    if shutil.which("strace") is None:
        if os.environ.get("CI"):
            pytest.fail("strace is required in CI")
        pytest.skip("needs strace")
    sends = 300
    trace = tmp_path / "futex.trace"
    with pyshm.Channel(pyshm_name, create=True, capacity=8192) as c:
        for _ in range(3):
            with pyshm_child(ASYNC_RECEIVER, pyshm_name) as child:
                assert child.line().startswith("ready")
                wait_until_sleeping(child.pid)
                child.kill()
                child.reap()
        sender = pyshm_child.command("strace", "-f", "-qq", "-e", "trace=futex", "-o",
                                     str(trace), sys.executable, "-c", WAKE_SENDER,
                                     pyshm_name, sends)
        sender.finish()
        assert c.queued == sends * 24
    wakes = [line for line in trace.read_text().splitlines() if "FUTEX_WAKE," in line]
    assert len(wakes) <= 1, f"{len(wakes)} wake calls for {sends} sends:\n" + "\n".join(wakes)
