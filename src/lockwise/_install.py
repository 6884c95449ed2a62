"""Make ``threading`` (and the modules built on it) produce lockwise locks.

``install()`` replaces the factories in the ``threading`` module; modules
that look them up at call time (``queue``, ``concurrent.futures``,
``logging`` handlers, ``threading.Event``/``Barrier``/``Thread``) then build
on lockwise. Locks created before ``install()`` stay as they were: the
import machinery's locks, and ``logging``'s module lock when ``logging`` was
imported first (imported after, it is a lockwise RLock; CPython's own known
inversion through it is a declared exception: see ``_order._declared_exception``).
Calls nest: the patch is removed by the matching last ``uninstall()``.

``threading.Lock`` and ``threading.RLock`` become subclasses of lockwise's
Lock and RLock that keep the standard library's constructor contract (the
standard suites test it): ``threading.Lock()`` takes no arguments,
``threading.RLock(*args, **kwargs)`` ignores its arguments (with the
DeprecationWarning of 3.13) where the running CPython does, and raises
TypeError where it does not (3.15), and neither can be subclassed (in CPython they
are factory functions, or a final type). ``lockwise.Lock("name")`` is unchanged.
"""

from __future__ import annotations

import _thread
import importlib.util
import sys
import threading
import warnings
from types import ModuleType

from ._condition import BoundedSemaphore, Condition, Semaphore
from ._primitives import Lock as _Lock
from ._primitives import RLock as _RLock

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    import importlib.machinery
    from typing import Any, Callable, NoReturn, Optional, Sequence


def _rlock_takes_arguments() -> bool:
    """Whether this CPython's ``_thread.RLock`` accepts (and ignores) arguments:
    3.10-3.14 do (3.13 and 3.14 warn in ``threading.RLock``), 3.15 raises
    TypeError (python/cpython#134087)."""
    try:
        _thread.RLock(None)  # type: ignore[call-arg]
    except TypeError:
        return False
    return True


_RLOCK_TAKES_ARGUMENTS = _rlock_takes_arguments()


class Lock(_Lock):
    """``threading.Lock`` while installed: a lockwise Lock made as ``threading`` makes one.

    It lives here under its own name so that pickle finds it (multiprocessing's
    managers register ``threading.Lock`` and pickle the registry).
    """

    __slots__ = ()

    def __init__(self) -> None:  # no arguments, as _thread.allocate_lock()
        _Lock.__init__(self)

    def __init_subclass__(cls, **kwargs: Any) -> NoReturn:
        raise TypeError("type 'threading.Lock' is not an acceptable base type")


class RLock(_RLock):
    """``threading.RLock`` while installed: a lockwise RLock made as ``threading`` makes one."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            if not _RLOCK_TAKES_ARGUMENTS:
                raise TypeError("RLock() takes no arguments")
            if sys.version_info >= (3, 13):
                warnings.warn("Passing arguments to RLock is deprecated and will be removed "
                              "in 3.15", DeprecationWarning, stacklevel=2)
        _RLock.__init__(self)  # _thread.RLock ignores its arguments (3.10-3.14)

    def __init_subclass__(cls, **kwargs: Any) -> NoReturn:
        raise TypeError("threading.RLock is a factory function, not a base class")


_ORIGINALS: dict[str, Any] = {
    name: getattr(threading, name)
    for name in ("Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore")
}
_REPLACEMENTS: dict[str, Any] = {
    "Lock": Lock, "RLock": RLock, "Condition": Condition,
    "Semaphore": Semaphore, "BoundedSemaphore": BoundedSemaphore,
}
_depth = 0
_hooks: list[Any] = []


def add_install_hook(hook: Any) -> None:
    """Call ``hook(installing: bool)`` on the first install and last uninstall."""
    _hooks.append(hook)


def install() -> None:
    """Make ``threading.Lock`` and friends produce lockwise primitives from now on.

    The first install also lists the plain locks that loaded modules already
    hold (:func:`scan_predating`): they are not watched, and the runner's and
    the plugin's summaries (or one line on stderr at exit) say so."""
    global _depth
    _depth += 1
    if _depth == 1:
        for name, value in _REPLACEMENTS.items():
            setattr(threading, name, value)
        for hook in _hooks:
            hook(True)
        try:
            _note_predating(scan_predating())
        except Exception as exc:
            from ._findings import internal_error

            internal_error("listing the locks made before install()", exc)


# ---------------------------------------------------------------- locks made before install

_PLAIN_LOCK_TYPES: tuple[type, ...] = (type(_thread.allocate_lock()), type(_thread.RLock()))
_PLAIN_WRAPPERS: tuple[type, ...] = tuple(
    _ORIGINALS[name] for name in ("Condition", "Semaphore", "BoundedSemaphore"))
#: module name -> names ("NAME" or "Class.NAME") of the plain locks found by the
#: first install's scan. Filled once per process (a forked child inherits it).
predating: dict[str, list[str]] = {}
#: Set by a caller that prints :func:`predating_line` itself (the runner, the
#: plugin): then nothing is printed at exit.
predating_reported = False
_predating_scanned = False


def _is_plain_lock(value: object) -> bool:
    if isinstance(value, _PLAIN_LOCK_TYPES):
        return True
    if isinstance(value, _PLAIN_WRAPPERS) and not isinstance(
            value, (Condition, Semaphore, BoundedSemaphore)):
        return True
    cond = getattr(value, "_cond", None) if isinstance(value, threading.Event) else None
    return cond is not None and not isinstance(cond, Condition)


def _skipped_module(name: str, module: ModuleType) -> bool:
    """lockwise's own modules and the standard library's (except logging,
    whose module lock programs share), and modules without a file."""
    if name == "logging" or name == "__main__":
        return False
    if name == "lockwise" or name.startswith("lockwise."):
        return True
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str):
        return True
    return filename.startswith(_stdlib_dirs()) and "-packages" not in filename


_STDLIB: Optional[tuple[str, ...]] = None


def _stdlib_dirs() -> tuple[str, ...]:
    global _STDLIB
    if _STDLIB is None:
        import os

        base = os.path.dirname(threading.__file__)
        _STDLIB = (base + os.sep,)
    return _STDLIB


def scan_predating() -> dict[str, list[str]]:
    """The plain ``threading``/``_thread`` locks (Lock, RLock, and the
    Condition, Semaphore and Event built on them) held in the globals and the
    class attributes of the modules loaded now, by module. Not replaced:
    another reference (a bound method, a closure, a thread holding it) may
    still use the plain one, which would split one lock into two.

    Cost: one pass over the loaded modules' dicts and their classes' dicts
    (about 1 ms per 300 modules)."""
    found: dict[str, list[str]] = {}
    for name, module in list(sys.modules.items()):
        if not isinstance(module, ModuleType) or _skipped_module(name, module):
            continue
        try:
            names = _scan_namespace(module)
        except Exception:  # a module with a hostile __dict__: skip it
            continue
        if names:
            found[name] = names
    return found


def _scan_namespace(module: ModuleType) -> list[str]:
    names: list[str] = []
    modname = module.__name__
    for attr, value in list(vars(module).items()):
        if _is_plain_lock(value):
            names.append(attr)
        elif isinstance(value, type) and value.__module__ == modname:
            for cattr, cvalue in list(vars(value).items()):
                if _is_plain_lock(cvalue):
                    names.append(f"{value.__qualname__}.{cattr}")
    return sorted(set(names))


def _note_predating(found: dict[str, list[str]]) -> None:
    global _predating_scanned
    if _predating_scanned:
        return
    _predating_scanned = True
    predating.update(found)
    if found:
        import atexit

        atexit.register(_print_predating)


def predating_line() -> Optional[str]:
    """"N locks in M modules predate lockwise (module: names; ...)", or None."""
    if not predating:
        return None
    from ._findings import printable

    count = sum(len(v) for v in predating.values())
    listed = "; ".join(f"{mod}: {', '.join(names)}" for mod, names in sorted(predating.items()))
    verbs = "predate lockwise and are" if count != 1 else "predates lockwise and is"
    return printable(f"lockwise: {count} lock{'s' if count != 1 else ''} in {len(predating)} "
                     f"module{'s' if len(predating) != 1 else ''} {verbs} not watched ({listed})")


def predating_data() -> dict[str, Any]:
    """The JSON report's ``watched.predating``."""
    return {"locks": sum(len(v) for v in predating.values()),
            "modules": {mod: list(names) for mod, names in sorted(predating.items())}}


def _print_predating() -> None:
    line = predating_line()
    if line is None or predating_reported or not is_installed():
        return  # (uninstalled before exit: nothing was left to watch anyway)
    err = sys.__stderr__
    try:
        if err is not None:
            err.write(line + "\n")
    except Exception:
        pass


def uninstall() -> None:
    """Undo one :func:`install`; the last one restores ``threading``."""
    global _depth
    if _depth == 0:
        return
    _depth -= 1
    if _depth == 0:
        for name, value in _ORIGINALS.items():
            setattr(threading, name, value)
        for hook in _hooks:
            hook(False)


def is_installed() -> bool:
    return _depth > 0


class installed:  # lower case: used as a function, like contextlib.suppress
    """``with lockwise.installed():`` installs for the block."""

    def __enter__(self) -> None:
        install()

    def __exit__(self, *exc_info: object) -> None:
        uninstall()


# Not derived from importlib.abc: the import system only needs these methods,
# and importing importlib.abc costs ~10 ms of start-up (importlib.resources, ...).
class _AfterImport:
    """A meta-path finder and loader that runs a callback right after one module
    is first imported (one shot)."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name = name
        self.callback = callback
        self.loader: Any = None

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != self.name:
            return None
        cancel_when_imported(self.name)  # find the real spec without us
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self.loader = spec.loader
        spec.loader = self  # type: ignore[assignment]  # a Loader by protocol
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        try:
            self.callback()
        except Exception as exc:
            from ._findings import internal_error

            internal_error(f"patching {self.name} after its import", exc)


def when_imported(name: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once, right after ``name`` is first imported."""
    cancel_when_imported(name)
    sys.meta_path.insert(0, _AfterImport(name, callback))


def cancel_when_imported(name: str) -> None:
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not (isinstance(f, _AfterImport) and f.name == name)]

