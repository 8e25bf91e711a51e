"""Object messages: the pickler that Channel.send_obj() falls back on.

send_obj() pickles with ``pickle.dumps(obj, 5, buffer_callback=...)`` in C;
the standard pickler refuses memoryviews, so when that call raises TypeError
the C side calls :func:`dumps` here, whose pickler sends every memoryview as
an out-of-band buffer (copied once into the message, like a NumPy array)
and rebuilds it on the receiving side with :func:`_rebuild_memoryview` as a
memoryview of the same format, shape and read-only flag.  Its dispatch
table is layered over :data:`copyreg.dispatch_table`, so reducers registered
with :func:`copyreg.pickle` still apply.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from collections import ChainMap
from typing import Any, Callable, Dict, List, Tuple, cast

# memoryview.cast() takes a native single-character format, '@' allowed.
_CASTABLE = frozenset("cbBhHiIlLqQnNfdeP?")


def _rebuild_memoryview(buffer: Any, fmt: Any, shape: Tuple[int, ...],
                        readonly: bool) -> memoryview:
    # FMT is one of _CASTABLE (checked by the sender): typed Any, as the
    # stubs type cast() per literal format.
    view: memoryview = memoryview(buffer).cast("B")
    if fmt not in ("B", "@B") or len(shape) != 1:
        if 0 in shape:
            # cast() refuses zeros in a shape: an empty view of the format.
            view = view.cast(fmt)
        else:
            view = view.cast(fmt, shape)
    return view.toreadonly() if readonly else view


def _reduce_memoryview(view: memoryview) -> Tuple[Callable[..., memoryview], Tuple[Any, ...]]:
    fmt = view.format
    if fmt.lstrip("@") not in _CASTABLE or len(fmt.lstrip("@")) != 1:
        raise TypeError(f"send_obj() cannot send a memoryview of format {fmt!r}: send "
                        "bytes(view) or a NumPy array instead")
    if view.c_contiguous:
        data: Any = pickle.PickleBuffer(view)
    else:
        # One copy, in C order, which is what the shape on the other side means.
        data = pickle.PickleBuffer(bytes(view) if view.readonly else bytearray(view))
    return _rebuild_memoryview, (data, fmt, tuple(view.shape or ()), view.readonly)


_OURS: Dict[type, Any] = {memoryview: _reduce_memoryview}


class _Pickler(pickle.Pickler):
    dispatch_table = ChainMap(_OURS, cast(Dict[type, Any], copyreg.dispatch_table))


def dumps(obj: Any) -> Tuple[bytes, List[pickle.PickleBuffer]]:
    """Pickle OBJ with protocol 5; (the stream, its out-of-band buffers)."""
    buffers: List[pickle.PickleBuffer] = []
    out = io.BytesIO()
    _Pickler(out, protocol=5, buffer_callback=buffers.append).dump(obj)
    return out.getvalue(), buffers
