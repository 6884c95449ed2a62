"""Lock and RLock over the C hot path of ``_speedups`` (when it was built).

The classes here are the pure ones of ``_primitives`` with their hot methods
(``acquire``, ``release``, ``__enter__``, ``__exit__``) taken from the C base
types; every other method (the slow path, introspection, the Condition
protocol, repr) is the pure class's own function, so a fix there applies to
both implementations. The C code hands every case it does not handle
(contention, timeouts, validation, the lock-order check of a chain of sites
not validated yet, a thread's first use) back to those Python functions.

Importing this module fails with ImportError when ``_speedups`` is missing,
and in a subinterpreter (the C module's references set by ``setup()`` are
process-wide: a subinterpreter importing lockwise would rebind them to its own
objects, which die with it); ``_primitives`` then keeps the pure classes.
"""

from __future__ import annotations

import _thread
from types import MemberDescriptorType, MethodDescriptorType

from . import _order
from ._config import settings
from ._sites import INTERNAL_FILES
from ._state import ThreadState, _local, in_main_interpreter, new_state

if not in_main_interpreter():
    raise ImportError("lockwise._speedups is not used in a subinterpreter")

from ._speedups import InnerLock as InnerLock  # noqa: E402
from ._speedups import LockBase as LockBase  # noqa: E402
from ._speedups import RLockBase as RLockBase  # noqa: E402
from ._speedups import new_rlock as new_rlock  # noqa: E402
from ._speedups import own_methods as own_methods  # noqa: E402
from ._speedups import set_quiet_wait as set_quiet_wait  # noqa: E402
from ._speedups import setup  # noqa: E402
from ._speedups import setup_rlock as setup_rlock  # noqa: E402

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional

#: Names the C base types implement.
C_METHODS = frozenset({"acquire", "release", "__enter__", "__exit__", "_is_owned",
                       "_set_held_in_with"})
_allocate_lock = _thread.allocate_lock
_SKIP = frozenset({"__slots__", "__dict__", "__weakref__", "__module__", "__qualname__",
                   "__annotations__"})


def _note(ts: ThreadState, lock: Any) -> Optional[BaseException]:
    # A Python frame between the C acquire and _order.note, so that note sees
    # the caller's frame at the same depth as from the pure Lock.acquire.
    return _order.note(ts, lock)


def accelerate(pure: type, base: type) -> type:
    """The class ``pure`` with its hot path from the C type ``base``."""
    ns: dict[str, Any] = {"__slots__": (), "__module__": pure.__module__,
                          "__qualname__": pure.__qualname__}
    for name, value in vars(pure).items():
        if name in C_METHODS or name in _SKIP or isinstance(value, MemberDescriptorType):
            continue
        ns[name] = value
    # The inner lock the C hot path drives without a method call.
    ns["_new_inner"] = InnerLock
    cls: Any = type(pure.__name__, (base, *pure.__bases__), ns)

    def init_subclass(sub: Any, /, **kwargs: Any) -> None:
        super(cls, sub).__init_subclass__(**kwargs)
        own_hot_methods(sub)

    cls.__init_subclass__ = classmethod(init_subclass)
    own_hot_methods(cls)
    return cls  # type: ignore[no-any-return]


def own_hot_methods(cls: type) -> None:
    """Give ``cls`` its own descriptors of the C methods it inherits unchanged.

    CPython (3.11 and later) turns ``lock.acquire()`` into a direct call of the
    C function only when ``type(lock)`` is exactly the class the method
    descriptor belongs to. Every lockwise lock class is a Python subclass of a
    C base, so an inherited descriptor sent each call down the generic path:
    about 350 instructions per acquire+release pair (callgrind). Called for
    the accelerated classes and, through ``__init_subclass__``, for every
    subclass (multiprocessing's locks, and the program's own); a method a
    subclass defines in Python stays its own.
    """
    names = []
    for name in sorted(C_METHODS):
        for klass in cls.__mro__:
            if name in vars(klass):
                found = vars(klass)[name]
                if (isinstance(found, MethodDescriptorType)
                        and issubclass(found.__objclass__, (LockBase, RLockBase))
                        and found.__objclass__ is not cls):
                    names.append(name)
                break
    if names:
        own_methods(cls, names)


# The C side also runs the first lines of _order.note itself (ts.quiet, then the
# chain key (held sites, new site) found in _order._known, or for nested locks of
# one site the key with their serials found in _order._known_instances): a nested
# acquire of an already validated order calls no Python code. Keep it in step
# with note().
setup(_local, new_state, settings, _note, INTERNAL_FILES, ThreadState, _allocate_lock(), _order)
