"""Where things happen: creation sites, acquisition sites and user stacks.

A ``Site`` is interned per (code object, line), so every lock created on one
line shares one object: that object is the lock's class in the order graph,
and costs no memory per lock. Frames inside lockwise and ``threading`` are
skipped everywhere, so sites and stacks point at the user's code.

Generated code (``exec``/``eval``, template engines, ``namedtuple``- and
``dataclass``-style factories, notebook cells: a ``co_filename`` that is
``<...>`` or no existing file) can create code objects without end. Its
sites are interned per code object too (two generated functions never share
a class, whatever their text), but the table holds the code object only
weakly: an entry goes when its code object is freed, so the table is
bounded by the live code, as under plain Python. A lock keeps its own site;
a later code object at the same address gets a new site. Sites of files
on disk are kept for good (bounded by the source).
"""

from __future__ import annotations

import linecache
import os
import sys
import threading
import weakref
from types import CodeType, FrameType

from ._findings import FrameInfo

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _internal_files() -> set[str]:
    files = {threading.__file__}
    for root, _dirs, names in os.walk(_PACKAGE_DIR):
        files.update(os.path.join(root, n) for n in names if n.endswith(".py"))
    # co_filename may be relative or differently spelled than __file__.
    files.update({os.path.normcase(f) for f in files})
    return files


#: Files whose frames never appear in sites or stacks.
INTERNAL_FILES: set[str] = _internal_files()


def is_internal(code: CodeType) -> bool:
    filename = code.co_filename
    return filename in INTERNAL_FILES or os.path.abspath(filename).startswith(_PACKAGE_DIR)


def raised_outside(exc: BaseException) -> bool:
    """Was ``exc`` raised by code that is not lockwise's?

    A signal handler (a SIGALRM timeout decorator) or a finalizer may run in
    the middle of lockwise's bookkeeping and raise: that exception belongs to
    the program, and must reach it as it would under plain Python, not be
    reported as lockwise's own error. Its innermost frame is the handler's.
    """
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and last.tb_frame.f_code.co_filename not in INTERNAL_FILES


def _assigned_name(line: str) -> str:
    """The target of ``x = ...``, ``self.x = ...`` or ``x: T = ...`` on ``line``, or ''.

    (Parsed by hand: ``re`` costs ~5 ms of start-up for this one pattern.)
    """
    text = line.lstrip()
    end = 0
    while end < len(text) and (text[end].isalnum() or text[end] in "_."):
        end += 1
    target = text[:end]
    if not target or not (target[0].isalpha() or target[0] == "_"):
        return ""
    rest = text[end:].lstrip()
    if rest.startswith(":"):  # an annotation, up to the first '='
        rest = rest[rest.find("="):] if "=" in rest else ""
    return target if rest.startswith("=") and not rest.startswith("==") else ""


class Site:
    """A source location: ``str(site)`` is ``path:line`` as tracebacks spell it.

    ``label`` is a short human name guessed from the source line, e.g.
    ``Account.lock`` for ``self.lock = Lock()`` in a method of ``Account``.
    """

    __slots__ = ("filename", "lineno", "function", "label", "signal", "_instances", "__weakref__")

    def __init__(self, filename: str, lineno: int, function: str, label: str) -> None:
        self.filename = filename
        self.lineno = lineno
        self.function = function
        self.label = label
        #: Set once a lock of this site was released by a thread that did not
        #: acquire it: such locks are signals, not mutexes (no order edges,
        #: and a wait on them is released by anybody).
        self.signal = False
        self._instances = 0

    def next_instance(self) -> int:
        """A serial number for one more lock of this site (for '#n' in names)."""
        self._instances += 1
        return self._instances

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"

    def __repr__(self) -> str:
        return f"<Site {self.label} at {self}>"


UNKNOWN_SITE = Site("<unknown>", 0, "?", "lock")
_sites: dict[tuple[CodeType, int], Site] = {}
#: (id(code), instruction offset) -> (code, site). Keyed by id, not by the code
#: object: hashing a code object hashes its whole contents (about 1.5 us each
#: time on 3.13). The entry keeps its code object alive, so the id cannot be
#: reused while the entry exists.
_by_offset: dict[tuple[int, int], tuple[CodeType, Site]] = {}
#: Sites of generated code: (id(code), line) -> (weak reference to the code,
#: site); the reference's callback removes the code's entries (see above).
_generated: dict[tuple[int, int], tuple[weakref.ref[CodeType], Site]] = {}
#: id(code) -> the lines of its entries in ``_generated``.
_generated_lines: dict[int, list[int]] = {}
#: Whether a co_filename is generated code (bounded: file names, not code objects).
_is_generated: dict[str, bool] = {}


def generated(filename: str) -> bool:
    """Whether code of ``filename`` is generated: ``<string>`` and the like,
    or a name that is no file (a notebook cell's, a template's)."""
    if filename.startswith("<"):
        return True
    known = _is_generated.get(filename)
    if known is None:
        known = not os.path.isfile(filename)
        if len(_is_generated) < 4096:
            _is_generated[filename] = known
    return known


def _forget_code(ident: int) -> None:
    """The code object ``ident`` was freed: drop its generated sites."""
    for line in _generated_lines.pop(ident, ()):
        _generated.pop((ident, line), None)


def _generated_site(frame: FrameType) -> Site:
    code = frame.f_code
    lineno = frame.f_lineno
    key = (id(code), lineno)
    entry = _generated.get(key)
    if entry is not None and entry[0]() is code:
        return entry[1]
    site = Site(code.co_filename, lineno, code.co_name, _guess_label(frame))
    ident = id(code)
    lines = _generated_lines.get(ident)
    if lines is None or entry is not None:  # first site of this code object
        def forget(_ref: weakref.ref[CodeType], ident: int = ident) -> None:
            _forget_code(ident)

        ref = weakref.ref(code, forget)
        lines = _generated_lines[ident] = []
    else:
        ref = _generated[(ident, lines[0])][0]
    lines.append(lineno)
    return _generated.setdefault(key, (ref, site))[1]


def _guess_label(frame: FrameType) -> str:
    code = frame.f_code
    try:
        text = linecache.getline(code.co_filename, frame.f_lineno)
    except Exception:  # e.g. at interpreter shutdown: "sys.meta_path is None"
        text = ""
    target = _assigned_name(text)
    owner = ""
    if target.startswith(("self.", "cls.")):
        target = target.split(".", 1)[1]
        try:
            me = frame.f_locals.get("self", frame.f_locals.get("cls"))
        except Exception:  # f_locals can fail on exotic frames
            me = None
        if me is not None:
            owner = (me if isinstance(me, type) else type(me)).__name__
    if target:
        return f"{owner}.{target}" if owner else target
    base = os.path.basename(code.co_filename)
    return f"{base}:{frame.f_lineno}"


def user_frame(frame: Optional[FrameType]) -> Optional[FrameType]:
    """The first frame at or above ``frame`` that is not lockwise's or threading's."""
    while frame is not None and frame.f_code.co_filename in INTERNAL_FILES:
        frame = frame.f_back
    return frame


def site_of(frame: Optional[FrameType]) -> Site:
    """The interned site of the first user frame at or above ``frame``."""
    frame = user_frame(frame)
    if frame is None:
        return UNKNOWN_SITE
    # Keyed by instruction offset first: f_lasti is a plain read, f_lineno
    # decodes the line table (measurable when a program creates many locks).
    code = frame.f_code
    key = (id(code), frame.f_lasti)
    entry = _by_offset.get(key)
    if entry is not None and entry[0] is code:
        return entry[1]
    if generated(code.co_filename):
        return _generated_site(frame)  # not in _by_offset: that would keep the code
    lineno = frame.f_lineno
    site = _sites.get((code, lineno))
    if site is None:
        site = _sites.setdefault(
            (code, lineno), Site(code.co_filename, lineno, code.co_name, _guess_label(frame))
        )
    _by_offset[key] = (code, site)
    return site


def named_site(name: str, frame: Optional[FrameType]) -> Site:
    """The site of a lock given an explicit name: the name is its class."""
    key: Any = (name, 0)
    site = _sites.get(key)
    if site is None:
        where = user_frame(frame)
        if where is None:
            site = Site("<unknown>", 0, "?", name)
        else:
            site = Site(where.f_code.co_filename, where.f_lineno, where.f_code.co_name, name)
        site = _sites.setdefault(key, site)
    return site


def frame_info(code: CodeType, lineno: int) -> FrameInfo:
    try:
        line = linecache.getline(code.co_filename, lineno).strip()
    except Exception:  # as in _guess_label
        line = ""
    return FrameInfo(code.co_filename, lineno, code.co_name, line)


def user_stack(frame: Optional[FrameType], limit: int = 40) -> list[FrameInfo]:
    """The user frames from the outermost to ``frame`` (at most ``limit``)."""
    frames: list[FrameInfo] = []
    while frame is not None and len(frames) < limit:
        code = frame.f_code
        if code.co_filename not in INTERNAL_FILES:
            frames.append(frame_info(code, frame.f_lineno))
        frame = frame.f_back
    frames.reverse()
    return frames


def thread_name(ident: int) -> str:
    """The current name of the thread ``ident`` (or a stand-in if it is gone)."""
    thread = threading._active.get(ident)  # type: ignore[attr-defined]
    if thread is not None:
        return str(thread.name)
    if ident == threading.main_thread().ident:
        return "MainThread"
    return f"Thread-{ident}"


def current_frames() -> dict[int, FrameType]:
    return sys._current_frames()
