"""Sphinx extension: typed signatures for the C extension, from its stubs.

autodoc documents ``pyshm._pyshm`` from the running extension: the text of
every docstring, and signatures from their first lines (``__text_signature__``),
which carry no types.  The types are written once, in ``pyshm/_pyshm.pyi``
(what mypy checks user code against); this extension reads that stub -- the
one installed next to the extension autodoc imported -- and gives autodoc
its signatures, so the reference shows ``send(data: Buffer, timeout:
Optional[float] = None) -> None`` without a second copy of either.

A name the stub does not declare keeps autodoc's own signature; a property
gets its type from the stub's getter, as the first line of its text.  Of overloads (``wait``) the last,
most general one is shown.
"""

from __future__ import annotations

import ast
import copy
import importlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

Signature = Tuple[str, Optional[str]]   # (arguments in parentheses, return annotation)


def _is_overload(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "overload" for d in fn.decorator_list)


def _is_property(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list)


def _signature(fn: ast.FunctionDef, method: bool, source: str) -> Signature:
    args = copy.deepcopy(fn.args)
    if method:      # self is not shown (autodoc drops it too)
        if args.posonlyargs:
            args.posonlyargs.pop(0)
        else:
            args.args.pop(0)
    # Defaults as the stub writes them (0o600, 1 << 20), not as their values.
    args.defaults = [_as_written(d, source) for d in args.defaults]
    args.kw_defaults = [None if d is None else _as_written(d, source) for d in args.kw_defaults]
    returns = ast.unparse(fn.returns) if fn.returns is not None else None
    return f"({ast.unparse(args)})", returns


def _as_written(node: ast.expr, source: str) -> ast.expr:
    text = ast.get_source_segment(source, node)
    return ast.Name(id=text) if text else node


def _add(table: Dict[str, List[Signature]], name: str, fn: ast.FunctionDef,
         method: bool, source: str) -> None:
    sig = _signature(fn, method, source)
    if _is_overload(fn):
        table.setdefault(name, []).append(sig)
    elif name not in table:     # a plain def after overloads would be the implementation
        table[name] = [sig]


def read_stub(path: Path) -> Tuple[Dict[str, List[Signature]], Dict[str, str]]:
    """The stub's signatures by dotted name within its module (``Channel.send``;
    a class's is its ``__init__``'s) and its properties' types."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path))
    sigs: Dict[str, List[Signature]] = {}
    props: Dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            _add(sigs, node.name, node, method=False, source=source)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if not isinstance(item, ast.FunctionDef):
                    continue
                if _is_property(item) and item.returns is not None:
                    props[f"{node.name}.{item.name}"] = ast.unparse(item.returns)
                elif item.name == "__init__":
                    sigs[node.name] = [(_signature(item, method=True, source=source)[0], None)]
                else:
                    _add(sigs, f"{node.name}.{item.name}", item, method=True, source=source)
    return sigs, props


def _runtime(module: Any, dotted: str) -> Any:
    """The object the running module has under DOTTED (a class, a function,
    or a class's own method or property descriptor), or None."""
    owner, _, member = dotted.rpartition(".")
    if not owner:
        return getattr(module, dotted, None)
    cls = getattr(module, owner, None)
    return None if cls is None else vars(cls).get(member)


class Stubs:
    """The stubs of the modules named in ``pyshm_stub_modules``, keyed by the
    running objects they describe: what autodoc documents as ``pyshm.Channel``
    or ``pyshm.Channel.send`` is the extension's own type and method
    descriptor, whatever name it is shown under, and a Python subclass's
    method (``pyshm.asyncio.Channel.send``) is another object, which keeps
    its own annotations."""

    def __init__(self, modules: List[str]) -> None:
        self.sigs: Dict[int, List[Signature]] = {}
        self.props: Dict[int, str] = {}
        self._keep: List[Any] = []      # the keys are ids: keep their objects alive
        for name in modules:
            mod = importlib.import_module(name)
            stub = Path(mod.__file__ or "").parent / (name.rsplit(".", 1)[-1] + ".pyi")
            if not stub.is_file():
                raise FileNotFoundError(f"pyshm_stubs: no stub {stub} for {name}")
            sigs, props = read_stub(stub)
            for table, found in ((self.sigs, sigs), (self.props, props)):
                for dotted, value in found.items():
                    obj = _runtime(mod, dotted)
                    if obj is not None:
                        self._keep.append(obj)
                        table[id(obj)] = value  # type: ignore[assignment]


def _process_signature(app: Any, what: str, name: str, obj: Any, options: Any,
                       signature: Optional[str], return_annotation: Optional[str]
                       ) -> Optional[Signature]:
    if what in ("attribute", "property"):
        return None     # their type goes into the text (_process_docstring)
    found = app.pyshm_stubs.sigs.get(id(obj))
    # Overloads (pyshm.wait): the last, most general one; the docstring
    # says what the others narrow.
    return found[-1] if found else None


def _process_docstring(app: Any, what: str, name: str, obj: Any, options: Any,
                       lines: List[str]) -> None:
    kind = app.pyshm_stubs.props.get(id(obj)) if what in ("attribute", "property") else None
    if kind:
        lines[:0] = [f"*Type:* ``{kind}``", ""]


def _load(app: Any) -> None:
    # On the application, not the build environment: the environment is
    # pickled between builds, and these are live objects of the extension.
    app.pyshm_stubs = Stubs(app.config.pyshm_stub_modules)


def setup(app: Any) -> Dict[str, Any]:
    app.add_config_value("pyshm_stub_modules", [], "env")
    app.connect("builder-inited", _load)
    app.connect("autodoc-process-signature", _process_signature)
    app.connect("autodoc-process-docstring", _process_docstring)
    return {"parallel_read_safe": True, "env_version": 1}
