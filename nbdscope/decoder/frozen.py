"""A decorator for the decoder's events: frozen, hashable, keyword-only records
that type checkers see as dataclasses.

Why not ``@dataclass(frozen=True)``: its ``__init__`` stores each field through
``object.__setattr__``, which made an event about three times dearer to build than
a plain slots class, and the proxy builds one per message. Here an event is a
tuple underneath: one C call stores all fields at once, the values can never be
reassigned, and hashing is the tuple's own. Reads go through the C accessors that
``collections.namedtuple`` uses.

What stays as with dataclasses: ``dataclasses.fields``, ``replace``, ``asdict`` and
``is_dataclass`` work (the class carries ``__dataclass_fields__``); equality needs
the same class; ordering is refused. What differs: an event is also a tuple, so do
not iterate over one or take its length expecting anything meaningful.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from operator import itemgetter
from typing import Any, TypeVar, dataclass_transform

try:
    from _collections import _tuplegetter  # type: ignore[import-not-found]  # CPython's C accessor, no stub
except ImportError:  # another Python: a property does the same, a little slower
    def _tuplegetter(index: int, doc: str | None) -> Any:
        return property(itemgetter(index), doc=doc)

T = TypeVar("T")
_tuple_new = tuple.__new__
_SPECS: dict[type, type] = {}  # event class -> the plain dataclass that describes its fields


def _rebuild(cls: type, values: tuple[Any, ...]) -> Any:
    return _tuple_new(cls, values)


def _refuse_order(self: object, other: object) -> Any:
    return NotImplemented


def _eq(self: tuple[Any, ...], other: object) -> bool:
    return type(self) is type(other) and tuple.__eq__(self, other)


def _ne(self: tuple[Any, ...], other: object) -> bool:
    return not (type(self) is type(other) and tuple.__eq__(self, other))


@dataclass_transform(kw_only_default=True, frozen_default=True)
def frozen_event(cls: type[T]) -> type[T]:
    """Turn a class with annotated fields (and defaults) into a frozen keyword-only event.

    The class may derive from one other class made by this decorator; its fields then
    follow the parent's. ``field(default_factory=...)`` is not supported: defaults must
    be immutable values, which is the point."""
    parent = cls.__bases__[0]
    if len(cls.__bases__) != 1 or (parent is not object and parent not in _SPECS):
        raise TypeError(f"{cls.__name__}: an event derives from one event class or from nothing")
    own = inspect.get_annotations(cls)  # this class's own, as strings
    defaults = {name: cls.__dict__[name] for name in own if name in cls.__dict__}
    for name, value in defaults.items():
        if isinstance(value, dataclasses.Field):
            raise TypeError(f"{cls.__name__}.{name}: give a plain immutable default, not field()")
    spec_ns: dict[str, Any] = {"__annotations__": dict(own), "__module__": cls.__module__,
                               "__qualname__": cls.__qualname__, **defaults}
    spec_parent = _SPECS.get(parent, object)
    spec: type = dataclasses.dataclass(kw_only=True, frozen=True, eq=False, repr=False, init=False)(
        type(cls.__name__, (spec_parent,), spec_ns))
    all_fields = dataclasses.fields(spec)
    names = [f.name for f in all_fields]

    ns: dict[str, Any] = {k: v for k, v in cls.__dict__.items()
                          if k not in defaults and k not in ("__dict__", "__weakref__")}
    ns["__slots__"] = ()
    ns["__dataclass_fields__"] = spec.__dataclass_fields__  # type: ignore[attr-defined]
    ns["__dataclass_params__"] = spec.__dataclass_params__  # type: ignore[attr-defined]
    ns["__match_args__"] = tuple(names)
    for i, name in enumerate(names):
        ns[name] = _tuplegetter(i, f"field {name}")
    ns["__new__"] = _make_new(cls.__name__, all_fields)
    ns["__repr__"] = _make_repr(names)
    ns["__eq__"], ns["__ne__"], ns["__hash__"] = _eq, _ne, tuple.__hash__
    ns["__lt__"] = ns["__le__"] = ns["__gt__"] = ns["__ge__"] = _refuse_order
    ns["__reduce__"] = lambda self: (_rebuild, (type(self), tuple(self)))
    ns["__copy__"] = lambda self: self
    ns["__deepcopy__"] = lambda self, memo: self
    base: type = tuple if parent is object else parent
    made = type(cls.__name__, (base,), ns)
    _SPECS[made] = spec
    return made


def _make_new(name: str, all_fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., Any]:
    """``__new__(cls, *, field, ...)`` written out, so building an event is one call."""
    env: dict[str, Any] = {"_tuple_new": _tuple_new}
    params = []
    for f in all_fields:
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            env[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
    values = ", ".join(f.name for f in all_fields)
    src = (f"def __new__(_cls, *, {', '.join(params)}):\n"
           f"    return _tuple_new(_cls, ({values},))\n")
    exec(src, env)
    made = env["__new__"]
    made.__qualname__ = f"{name}.__new__"
    return made  # type: ignore[no-any-return]


def positional(cls: type[T], last: str | None = None) -> Callable[..., T]:
    """A builder taking the fields of ``cls`` by position, in field order, up to ``last``
    (the rest get their defaults), for paths that build an event per message: CPython
    matches keyword arguments one by one, and with twenty fields that costs four times
    the building itself. Callers must pass every argument in order; prefer the class
    itself everywhere else."""
    all_fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in all_fields]
    upto = len(names) if last is None else names.index(last) + 1
    env: dict[str, Any] = {"_tuple_new": _tuple_new, "_cls": cls}
    for f in all_fields[upto:]:
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} has no default: it cannot be left out")
        env[f"_d_{f.name}"] = f.default
    values = ", ".join(names[:upto] + [f"_d_{n}" for n in names[upto:]])
    exec(f"def make({', '.join(names[:upto])}):\n    return _tuple_new(_cls, ({values},))\n", env)
    made = env["make"]
    made.__qualname__ = made.__name__ = f"make_{cls.__name__}"
    return made  # type: ignore[no-any-return]


def _make_repr(names: list[str]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(names, tuple(self), strict=True))
        return f"{type(self).__qualname__}({inner})"
    return __repr__
