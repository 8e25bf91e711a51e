"""pyshm.SharedMemory in one process, used as documented: the API of DESIGN.md.

Wrong arguments and OS refusals (the error table) are in test_bad_input.py.
"""

from __future__ import annotations

import inspect
import os
import sys
import weakref

import pytest

import pyshm

from .peer import opened_size

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="POSIX permission bits, read back from /dev/shm (Linux)")
# The platform rules of docs/windows.md's "Platform differences": on Windows an
# opener sees the size rounded up to a page (opened_size), and a name lives
# only while a handle to it is open (unlink() does nothing).
WINDOWS = sys.platform == "win32"


# ---- create, open, read, write ---------------------------------------------

def test_create_write_open_read(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=0x100) as a:
        assert a.write(b"data from process 1\0") == 20
        with pyshm.SharedMemory(pyshm_name) as b:
            assert b.size == opened_size(0x100)
            assert b.read(20) == b"data from process 1\0"
            assert b.read() == b"data from process 1\0" + bytes(b.size - 20)
            b.write(b"reply", 128)
        assert a.read(5, 128) == b"reply"


def test_new_segment_is_zeroed_and_exact_size(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=5000) as shm:
        assert shm.size == 5000
        assert shm.read() == bytes(5000)


@linux_only
def test_posix_name_has_no_slash_and_mode_is_owner_only(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=16) as shm:
        assert shm.name == pyshm_name
        st = os.stat(f"/dev/shm/{pyshm_name}")
        assert st.st_mode & 0o777 == 0o600 & ~_umask()
        assert st.st_size == 16


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@linux_only
def test_mode_is_applied(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=16, mode=0o640):
        assert os.stat(f"/dev/shm/{pyshm_name}").st_mode & 0o777 == 0o640 & ~_umask()


@pytest.mark.parametrize("offset,data", [
    (0, b"x"), (255, b"y"), (0, bytes(range(256))), (100, b"abc"), (256, b""), (0, b""),
])
def test_write_read_at_edges(pyshm_name, offset, data):
    with pyshm.SharedMemory(pyshm_name, create=True, size=256) as shm:
        assert shm.write(data, offset) == len(data)
        assert shm.read(len(data), offset) == data
        assert shm.read(0, 256) == b""


@pytest.mark.parametrize("data", [
    bytearray(b"bytearray"), memoryview(b"memoryview"), b"bytes",
    memoryview(b"0123456789")[::2].tobytes(),
])
def test_write_accepts_bytes_like(pyshm_name, data):
    with pyshm.SharedMemory(pyshm_name, create=True, size=64) as shm:
        shm.write(data, offset=3)
        assert shm.read(len(data), offset=3) == bytes(data)


def test_write_array_module_buffer(pyshm_name):
    import array

    data = array.array("I", [1, 2, 3])
    with pyshm.SharedMemory(pyshm_name, create=True, size=64) as shm:
        assert shm.write(data) == 12
        assert shm.read(12) == data.tobytes()


def test_readinto(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=100) as shm:
        shm.write(bytes(range(100)))
        buf = bytearray(10)
        assert shm.readinto(buf, 20) == 10
        assert buf == bytes(range(20, 30))
        # Near the end: as many as remain.
        buf = bytearray(10)
        assert shm.readinto(buf, offset=95) == 5
        assert buf == bytes(range(95, 100)) + bytes(5)
        assert shm.readinto(bytearray(4), 100) == 0
        mv = memoryview(bytearray(8))
        assert shm.readinto(mv[2:6]) == 4
        assert mv.tobytes() == b"\0\0" + bytes(range(4)) + b"\0\0"


@pytest.mark.parametrize("length", [1000, 300_000], ids=["small", "nogil"])
@pytest.mark.parametrize("shift", [8, -8], ids=["up", "down"])
def test_copies_within_the_segment_overlap(pyshm_name, length, shift):
    # A view of the segment itself as the other side: source and destination
    # overlap (memcpy would be undefined behaviour there; ASan reports
    # memcpy-param-overlap).  The result must be that of a copy through a
    # temporary, in both directions.
    size = length + 64
    pattern = bytes(i * 7 % 251 for i in range(size))
    with pyshm.SharedMemory(pyshm_name, create=True, size=size) as shm:
        src_at, dst_at = (0, shift) if shift > 0 else (-shift, 0)
        shm.write(pattern)
        with shm.buf[src_at:src_at + length] as src:
            assert shm.write(src, dst_at) == length
        expected = bytearray(pattern)
        expected[dst_at:dst_at + length] = pattern[src_at:src_at + length]
        assert shm.read() == expected

        shm.write(pattern)
        with shm.buf[dst_at:dst_at + length] as dst:
            assert shm.readinto(dst, src_at) == length
        assert shm.read() == expected


@pytest.mark.parametrize("method", ["write", "read", "readinto"])
def test_large_copies_release_the_gil(pyshm_name, gil_released_during, method):
    # One long copy (64 MiB): a second thread must make progress while it
    # runs.  A copy under the GIL gives it none (preemption is off).
    size = 64 << 20
    data = os.urandom(1 << 20) * 64
    into = bytearray(size)
    with pyshm.SharedMemory(pyshm_name, create=True, size=size) as shm:
        shm.write(data)
        call = {"write": lambda: shm.write(data),
                "read": lambda: shm.read(),
                "readinto": lambda: shm.readinto(into)}[method]
        # A loaded machine may not schedule the other thread within one
        # copy; under the GIL it could run in none of them.
        assert any(gil_released_during(call) for _ in range(5))
        assert shm.read() == data
        if method == "readinto":
            assert into == data


# ---- buffer protocol -----------------------------------------------------------

def test_buf_is_zero_copy(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=64) as shm:
        view = shm.buf
        view[0:5] = b"hello"
        assert shm.read(5) == b"hello"
        shm.write(b"J")
        assert view[0:1] == b"J"
        assert len(view) == 64 and not view.readonly
        view.release()


def test_close_refused_while_view_alive_then_allowed(pyshm_name):
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=64)
    view = memoryview(shm)
    with pytest.raises(BufferError, match="exported"):
        shm.close()
    # The mapping stayed valid.
    view[0] = 42
    assert shm.read(1) == b"*"
    view.release()
    shm.close()
    assert shm.closed
    shm.close()  # idempotent


def test_numpy_frombuffer_zero_copy(pyshm_name, numpy):
    np = numpy
    with pyshm.SharedMemory(pyshm_name, create=True, size=8 * 16) as shm:
        arr = np.frombuffer(shm.buf, dtype=np.float64)
        arr[:] = np.arange(16)
        assert shm.read(8, 8) == np.float64(1).tobytes()
        with pytest.raises(BufferError):
            shm.close()
        del arr
        with pyshm.SharedMemory(pyshm_name, readonly=True) as ro:
            arr = np.frombuffer(ro, dtype=np.float64)
            assert not arr.flags.writeable
            assert arr[15] == 15.0
            del arr


def test_context_manager_closes_but_keeps_name(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=8) as shm:
        shm.write(b"kept")
    assert shm.closed
    if WINDOWS:
        # The block closed the only handle, and with it the name goes.
        with pytest.raises(FileNotFoundError):
            pyshm.SharedMemory(pyshm_name)
        return
    with pyshm.SharedMemory(pyshm_name) as again:
        assert again.read(4) == b"kept"


def test_context_manager_never_unlinks(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=8) as keeper:
        with pyshm.SharedMemory(pyshm_name) as shm:
            shm.write(b"kept")
        with pyshm.SharedMemory(pyshm_name) as again:
            assert again.read(4) == b"kept"
        assert not keeper.closed


def test_context_manager_on_closed_object(pyshm_name):
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=8)
    shm.close()
    with pytest.raises(ValueError, match="closed"):
        with shm:
            pass


# ---- readonly ----------------------------------------------------------------

def test_readonly_refuses_writes(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=32) as rw:
        rw.write(b"abc")
        with pyshm.SharedMemory(pyshm_name, readonly=True) as ro:
            assert ro.readonly
            assert ro.read(3) == b"abc"
            with pytest.raises(TypeError, match="read-only"):
                ro.write(b"x")
            view = ro.buf
            assert view.readonly
            with pytest.raises(TypeError):
                view[0] = 1
            view.release()
            import ctypes
            with pytest.raises(TypeError):
                ctypes.c_char.from_buffer(ro)
            assert "ro>" in repr(ro)


# ---- names, repr, attributes -----------------------------------------------------

def test_random_name():
    made = []
    try:
        for _ in range(20):
            shm = pyshm.SharedMemory(create=True, size=10)
            made.append(shm)
            assert 0 < len(shm.name) <= 14
            assert "/" not in shm.name
        assert len({s.name for s in made}) == len(made)
        with pyshm.SharedMemory(made[0].name) as again:
            assert again.size == opened_size(10)
    finally:
        for shm in made:
            shm.close()
            shm.unlink()


def test_repr_and_attributes(pyshm_name):
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=256)
    assert repr(shm) == f"<pyshm.SharedMemory name={pyshm_name!r} size=256 rw>"
    assert (shm.name, shm.size, shm.readonly, shm.closed) == (pyshm_name, 256, False, False)
    shm.close()
    assert repr(shm) == f"<pyshm.SharedMemory name={pyshm_name!r} closed>"
    assert shm.closed and shm.name == pyshm_name


def test_signatures_for_help():
    sig = inspect.signature
    assert str(sig(pyshm.SharedMemory.write)) == "(self, /, data, offset=0)"
    assert str(sig(pyshm.SharedMemory.read)) == "(self, /, size=-1, offset=0)"
    assert str(sig(pyshm.SharedMemory.readinto)) == "(self, /, buffer, offset=0)"
    assert str(sig(pyshm.unlink)) == "(name, /)"
    assert "create=False" in str(inspect.signature(pyshm.SharedMemory))
    assert "All or nothing" in pyshm.SharedMemory.write.__doc__


def test_weakref(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=8) as shm:
        ref = weakref.ref(shm)
        assert ref() is shm
    del shm
    assert ref() is None


def test_help_shows_mode_in_octal():
    import pydoc

    for cls in (pyshm.SharedMemory, pyshm.Channel):
        sig = inspect.signature(cls)
        assert sig.parameters["mode"].default == 0o600
        assert "mode=0o600" in str(sig)
        assert "mode=0o600" in pydoc.render_doc(cls)
        assert sig.parameters["track"].default is False


def test_len_is_the_size_and_size_outlives_close(pyshm_name):
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=100)
    assert len(shm) == shm.size == 100
    shm.close()
    # As the standard library's: size stays, buf becomes None.
    assert shm.size == len(shm) == 100
    assert shm.buf is None
    assert shm.name == pyshm_name


# ---- buf: one view per open segment, as in the standard library ----------------

def test_buf_is_one_view_released_by_close(pyshm_name):
    """The standard library documentation's own example: take buf, use it,
    close.  close() releases the view it handed out."""
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=10)
    buffer = shm.buf
    assert shm.buf is buffer
    buffer[:4] = bytearray([22, 33, 44, 55])
    buffer[4] = 100
    assert bytes(buffer[:5]) == bytes([22, 33, 44, 55, 100])
    shm.close()
    with pytest.raises(ValueError, match="released"):
        buffer[0]
    assert shm.closed and shm.buf is None


@pytest.mark.parametrize("derive", ["slice", "memoryview", "numpy", "own view"])
def test_views_derived_from_buf_still_refuse_close(pyshm_name, derive, request):
    # (the conftest fixture: it says why NumPy is missing under Wine)
    np = request.getfixturevalue("numpy") if derive == "numpy" else None
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=64)
    if derive == "slice":
        view = shm.buf[8:16]
    elif derive == "memoryview":
        view = memoryview(shm.buf)
    elif derive == "numpy":
        view = np.frombuffer(shm.buf, dtype=np.uint8)
    else:
        view = memoryview(shm)
    with pytest.raises(BufferError, match="exported"):
        shm.close()
    # Nothing was unmapped: the derived view still works, and so does buf.
    view[0] = 7
    assert not shm.closed
    assert shm.buf[8 if derive == "slice" else 0] == 7
    if isinstance(view, memoryview):
        view.release()
    del view
    shm.close()
    assert shm.closed


def test_buf_released_by_the_user_is_replaced(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=16) as shm:
        first = shm.buf
        first.release()
        second = shm.buf
        assert second is not first
        second[0] = 1
        assert shm.read(1) == b"\x01"


def test_buf_keeps_the_object_alive_and_is_collected(pyshm_name):
    """buf refers back to its SharedMemory (a cycle): the garbage collector
    frees both, and the mapping with them."""
    import gc

    shm = pyshm.SharedMemory(pyshm_name, create=True, size=16)
    view = shm.buf
    ref = weakref.ref(shm)
    del shm
    assert ref() is not None        # the view holds it
    view[0] = 9
    del view
    gc.collect()
    assert ref() is None
    if WINDOWS:
        # The name went with the last handle: proof that the collection
        # closed it.
        with pytest.raises(FileNotFoundError):
            pyshm.SharedMemory(pyshm_name)
        return
    with pyshm.SharedMemory(pyshm_name) as again:
        assert again.read(1) == b"\t"


# ---- subclassing, as users of the standard library's class do -----------------

class Tagged(pyshm.SharedMemory):
    """A subclass with its own __init__ signature and extra attributes."""

    def __init__(self, name: str, tag: str, size: int = 0, create: bool = False) -> None:
        super().__init__(name, create=create, size=size)
        self.tag = tag
        self.log: list[str] = []

    def put(self, text: str) -> None:
        self.write(text.encode())
        self.log.append(text)


def test_subclass_with_own_init_and_attributes(pyshm_name):
    shm = Tagged(pyshm_name, "jobs", size=32, create=True)
    assert isinstance(shm, pyshm.SharedMemory) and shm.tag == "jobs"
    shm.put("hello")
    assert shm.read(5) == b"hello" and shm.log == ["hello"]
    assert repr(shm).startswith("<pyshm.SharedMemory name=")
    with Tagged(pyshm_name, "other") as again:
        # What an opener sees: Windows rounds up to a page.
        assert again.read(5) == b"hello" and again.size == (pyshm.PAGE_SIZE if WINDOWS else 32)
    shm.close()
    assert shm.size == 32


def test_subclass_in_a_cycle_is_collected(pyshm_name):
    import gc

    shm = Tagged(pyshm_name, "cycle", size=16, create=True)
    shm.me = shm                # a cycle through the instance dict
    view = shm.buf              # and one through the cached view
    view[0] = 1
    del view
    ref = weakref.ref(shm)
    del shm
    gc.collect()
    assert ref() is None


def test_init_runs_once_and_unopened_objects_say_so(pyshm_name):
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=8)
    with pytest.raises(TypeError, match="already initialised"):
        shm.__init__(pyshm_name)
    shm.close()

    class Lazy(pyshm.SharedMemory):
        def __init__(self) -> None:     # forgets super().__init__()
            pass

    lazy = Lazy()
    assert lazy.name is None and lazy.closed and lazy.size == 0
    assert "not opened" in repr(lazy)
    with pytest.raises(ValueError, match="__init__ has not run"):
        lazy.read()
    with pytest.raises(ValueError, match="__init__ has not run"):
        lazy.unlink()
    lazy.close()                # nothing to close: fine


@pytest.mark.skipif(sys.version_info < (3, 10),
                    reason="Python 3.9 has no immutable heap types (Py_TPFLAGS_IMMUTABLETYPE is 3.10)")
def test_types_are_immutable():
    for cls in (pyshm.SharedMemory, pyshm.Channel):
        with pytest.raises(TypeError, match="immutable"):
            cls.read = None  # type: ignore[method-assign]
        with pytest.raises(TypeError, match="immutable"):
            cls.extra = 1  # type: ignore[attr-defined]


def test_pickles_by_name(pyshm_name):
    """As the standard library's SharedMemory: the pickle holds the name (and
    readonly=True when set); loading it opens the same segment."""
    import pickle

    with pyshm.SharedMemory(pyshm_name, create=True, size=8) as shm:
        data = pickle.dumps(shm)
        assert len(data) < 200 and pyshm_name.encode() in data
        with pickle.loads(data) as again:
            assert again is not shm and again.name == pyshm_name and not again.readonly
            again.write(b"both")
        assert shm.read(4) == b"both"
        with pyshm.SharedMemory(pyshm_name, readonly=True) as ro:
            with pickle.loads(pickle.dumps(ro)) as again:
                assert again.readonly and again.read(4) == b"both"
        shm.close()
        with pytest.raises(ValueError, match="closed"):
            pickle.dumps(shm)


def test_dealloc_without_close_unmaps(pyshm_name):
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=4096)
    shm.write(b"x")
    del shm  # a forgotten close() leaks nothing; the name stays
    if WINDOWS:
        # ... except on Windows, where it goes with the last handle: proof
        # that the deallocation closed it.
        with pytest.raises(FileNotFoundError):
            pyshm.SharedMemory(pyshm_name)
        return
    with pyshm.SharedMemory(pyshm_name) as again:
        assert again.read(1) == b"x"


# ---- lifetime: exist_ok, unlink ---------------------------------------------------

def test_exclusive_create_and_exist_ok(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=100) as a:
        a.write(b"first")
        with pytest.raises(FileExistsError) as info:
            pyshm.SharedMemory(pyshm_name, create=True, size=100)
        assert info.value.filename == pyshm_name
        # exist_ok opens the existing one, with its own size (when it is not
        # smaller than asked: test_bad_input.py).
        with pyshm.SharedMemory(pyshm_name, create=True, size=50, exist_ok=True) as b:
            assert b.size == opened_size(100)
            assert b.read(5) == b"first"


def test_exist_ok_creates_when_missing(pyshm_name):
    with pyshm.SharedMemory(pyshm_name, create=True, size=64, exist_ok=True) as shm:
        assert shm.size == 64


@pytest.mark.skipif(WINDOWS, reason="Windows has no unlink: the name lives while a handle "
                                       "is open (test_unlink_does_nothing_on_windows)")
def test_unlink_method_and_function(pyshm_name):
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=64)
    shm.write(b"still mapped")
    shm.unlink()
    # The name is gone, the mapping is not.
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)
    assert shm.read(12) == b"still mapped"
    shm.close()
    with pytest.raises(FileNotFoundError) as info:
        pyshm.unlink(pyshm_name)
    assert info.value.filename == pyshm_name
    with pytest.raises(FileNotFoundError):
        shm.unlink()  # allowed after close, reports the missing name


@pytest.mark.skipif(not WINDOWS, reason="the Windows rule; POSIX: test_unlink_method_and_function")
def test_unlink_does_nothing_on_windows(pyshm_name):
    shm = pyshm.SharedMemory(pyshm_name, create=True, size=64)
    shm.write(b"still here")
    shm.unlink()
    pyshm.unlink(pyshm_name)
    # Both calls were harmless: the name stays while our handle is open...
    with pyshm.SharedMemory(pyshm_name) as again:
        assert again.read(10) == b"still here"
    shm.close()
    # ... and goes with it; unlinking a missing name is no error either.
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)
    pyshm.unlink(pyshm_name)
    shm.unlink()


def test_module_unlink(pyshm_name):
    pyshm.SharedMemory(pyshm_name, create=True, size=8).close()
    pyshm.unlink(pyshm_name)
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)


# ---- track= ----------------------------------------------------------------------

def test_track_registers_creators_and_unlink_forgets(pyshm_name, pyshm_names):
    from pyshm import _track

    shm = pyshm.SharedMemory(pyshm_name, create=True, size=8, track=True)
    chan = pyshm.Channel(pyshm_names(), create=True, capacity=64, track=True)
    expected = set() if sys.platform == "win32" else {pyshm_name, chan.name}
    assert _track.tracked() >= expected
    shm.close()
    shm.unlink()                    # the method forgets ...
    pyshm.unlink(chan.name)         # ... and so does the function
    assert not _track.tracked() & {pyshm_name, chan.name}
    chan.close()


@pytest.mark.parametrize("kind", ["segment", "channel"])
def test_track_failure_leaves_nothing(pyshm_name, monkeypatch, kind):
    from pyshm import _track

    def refuse(name: str) -> None:
        raise OSError("no resource tracker here")

    monkeypatch.setattr(_track, "register", refuse)
    with pytest.raises(OSError, match="no resource tracker"):
        if kind == "segment":
            pyshm.SharedMemory(pyshm_name, create=True, size=8, track=True)
        else:
            pyshm.Channel(pyshm_name, create=True, capacity=64, track=True)
    with pytest.raises(FileNotFoundError):
        pyshm.SharedMemory(pyshm_name)
