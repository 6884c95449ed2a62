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

import _thread
import linecache
import os
import sys
import threading
import weakref
from types import CodeType, FrameType

from ._findings import FrameInfo
from ._state import registered_thread

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
#: lockwise's own files (INTERNAL_FILES less threading's).
OWN_FILES: set[str] = {f for f in INTERNAL_FILES
                        if os.path.normcase(f) != os.path.normcase(threading.__file__)}


#: The standard library's directory (where ``os`` is), with a separator.
_STDLIB_DIR = os.path.dirname(os.__file__) + os.sep


def in_stdlib(filename: str) -> bool:
    """Is ``filename`` the standard library's (its site-packages excepted)?"""
    if filename.startswith(_STDLIB_DIR):
        return "site-packages" not in filename[len(_STDLIB_DIR):]
    return filename.startswith("<frozen ")


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
        """A serial number for one more lock of this site (for '#n' in names).

        Under ``_numbering``: without the GIL, two threads incrementing at
        once could both get the same number (two locks, one serial)."""
        with _numbering:
            self._instances += 1
            return self._instances

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"

    def __repr__(self) -> str:
        return f"<Site {self.label} at {self}>"


UNKNOWN_SITE = Site("<unknown>", 0, "?", "lock")
_sites: dict[Any, Site] = {}
#: (id(code), instruction offset) -> (code, site). Keyed by id, not by the code
#: object: hashing a code object hashes its whole contents (about 1.5 us each
#: time on 3.13). The entry keeps its code object alive, so the id cannot be
#: reused while the entry exists.
_by_offset: dict[tuple[int, int], Any] = {}
#: Sites of generated code: (id(code), line, label) -> (weak reference to the
#: code, site); the reference's callback removes the code's entries (see above).
_generated: dict[tuple[int, int, str], tuple[weakref.ref[CodeType], Site]] = {}
#: id(code) -> the keys of its entries in ``_generated``.
_generated_keys: dict[int, list[tuple[int, int, str]]] = {}
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
    for key in _generated_keys.pop(ident, ()):
        _generated.pop(key, None)


def _generated_site(code: CodeType, lineno: int, label: str) -> Site:
    ident = id(code)
    key = (ident, lineno, label)
    entry = _generated.get(key)
    if entry is not None and entry[0]() is code:
        return entry[1]
    site = Site(code.co_filename, lineno, code.co_name, label)
    keys = _generated_keys.get(ident)
    if keys is None or entry is not None:  # first site of this code object
        def forget(_ref: weakref.ref[CodeType], ident: int = ident) -> None:
            _forget_code(ident)

        ref = weakref.ref(code, forget)
        keys = _generated_keys[ident] = []
    else:
        ref = _generated[keys[0]][0]
    keys.append(key)
    return _generated.setdefault(key, (ref, site))[1]


_HEADERS = ("def ", "async def ", "class ", "if ", "elif ", "else:", "else :", "for ",
            "async for ", "while ", "with ", "async with ", "try:", "try :", "except",
            "finally:", "finally :")


def _split_top(text: str, sep: str) -> list[tuple[int, str]]:
    """``text`` split at ``sep`` outside brackets and strings: (offset, part)."""
    parts = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = ""
        elif ch in "\"'":
            quote = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else ch
            i += len(quote) - 1
        elif ch == "#":
            break
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i) and not (
                sep == "=" and (text[i + 1:i + 2] == "=" or text[i - 1:i] in "=!<>:+-*/%&|^@")):
            parts.append((start, text[start:i]))
            start = i + len(sep)
            i += len(sep) - 1
        i += 1
    parts.append((start, text[start:]))
    return parts


def _strip_header(offset: int, statement: str) -> tuple[int, str]:
    """The body of a one-line compound statement (``def f(self): x = Lock()``)."""
    stripped = statement.lstrip()
    if not stripped.startswith(_HEADERS):
        return offset, statement
    colons = _split_top(statement, ":")
    if len(colons) < 2:
        return offset, statement
    body_at, _body = colons[-1] if stripped.startswith(("def ", "async def ")) else colons[1]
    return offset + body_at, statement[body_at:]


def _call_column(code: CodeType, lasti: int) -> Optional[int]:
    """The source column (characters) of the instruction at ``lasti``, if known (3.11+)."""
    positions = getattr(code, "co_positions", None)
    if positions is None or lasti < 0:
        return None
    for i, pos in enumerate(positions()):
        if i == lasti // 2:
            return None if pos[2] is None else int(pos[2])
    return None


def assigned_target(line: str, column: Optional[int]) -> str:
    """The target that receives the value made at ``column`` of ``line``:
    ``b`` in ``a = Lock(); b = Lock()``, ``a`` in ``g, a, b = Lock(), Lock(),
    Lock()`` (by which value holds the column), ``lock`` in a one-line
    ``def __init__(self): self.lock = Lock()``; '' when there is none.
    Without a column (3.10) only a line with one statement and one target
    has an answer."""
    if column is not None:
        column = len(line.encode("utf-8")[:column].decode("utf-8", "ignore"))
    statements = _split_top(line, ";")
    if column is None:
        if len(statements) != 1:
            return ""
        offset, statement = statements[0]
    else:
        offset, statement = statements[0]
        for at, part in statements:
            if at <= column:
                offset, statement = at, part
    offset, statement = _strip_header(offset, statement)
    sides = _split_top(statement, "=")
    if len(sides) < 2:
        return ""
    # ``a = b = Lock()``: the first target names it
    targets = [t.strip() for _at, t in _split_top(sides[0][1], ",")]
    if len(targets) == 1:
        return _assigned_name(sides[0][1] + "=")
    values = _split_top(sides[-1][1], ",")
    if column is None or len(values) != len(targets):
        return ""
    value_offset = offset + sides[-1][0]
    index = 0
    for k, (at, _value) in enumerate(values):
        if value_offset + at <= column:
            index = k
    target = targets[index].strip("() ")
    return _assigned_name(target + "=")


#: (id(code), instruction offset) -> (code, assignment target) of a creation point.
_targets: dict[tuple[int, int], tuple[CodeType, str]] = {}


def _target_at(frame: FrameType) -> str:
    code = frame.f_code
    key = (id(code), frame.f_lasti)
    known = _targets.get(key)
    if known is not None and known[0] is code:
        return known[1]
    try:
        text = linecache.getline(code.co_filename, frame.f_lineno)
    except Exception:  # e.g. at interpreter shutdown: "sys.meta_path is None"
        text = ""
    try:
        target = assigned_target(text.rstrip("\n"), _call_column(code, frame.f_lasti))
    except Exception:  # an unusual line: no name rather than an error
        target = ""
    if not generated(code.co_filename):  # the entry keeps the code object alive
        _targets[key] = (code, target)
    return target


#: Classes whose ``__init__`` makes a lock for the object itself: the name is
#: that of the object (``stop`` for ``stop = Event()``), found further out.
_WRAPPERS = (threading.Event, threading.Condition, threading.Semaphore, threading.Barrier)


def _namer(frame: Optional[FrameType]) -> Optional[FrameType]:
    """The frame whose line names the object: the first one outside lockwise
    and outside the ``__init__`` of an Event, Condition, Semaphore or Barrier
    (a ``threading`` frame for the locks a Thread makes for itself)."""
    while frame is not None:
        code = frame.f_code
        if not is_internal_to_lockwise(code):
            if not (code.co_name == "__init__" and code.co_filename in INTERNAL_FILES):
                return frame
            owner = _owner_class(frame)
            if owner is None or not issubclass(owner, _WRAPPERS):
                return frame
        frame = frame.f_back
    return frame


def is_internal_to_lockwise(code: CodeType) -> bool:
    return code.co_filename in OWN_FILES


def _owner_class(frame: FrameType) -> Optional[type]:
    try:
        me = frame.f_locals.get("self", frame.f_locals.get("cls"))
    except Exception:  # f_locals can fail on exotic frames
        return None
    if me is None:
        return None
    return me if isinstance(me, type) else type(me)


#: Serializes the numbering of locks (``next_instance``, ``serial_for``):
#: reentrant, for a finalizer or signal handler that numbers a lock meanwhile.
_numbering = _thread.RLock()


def serial_for(obj: Any) -> int:
    """The serial of a lock, numbered on first need, once: two threads that
    number it at the same time get the same number (``_order`` keys its
    instance graph by it, and a lock that changed serial would be two nodes)."""
    serial: int = getattr(obj, "_serial", 0)
    if serial:
        return serial
    with _numbering:
        serial = getattr(obj, "_serial", 0)
        if not serial:
            serial = obj._site.next_instance()
            try:
                obj._serial = serial
            except AttributeError:  # an object without the slot: a fresh number each time
                pass
    return serial


def user_frame(frame: Optional[FrameType]) -> Optional[FrameType]:
    """The first frame at or above ``frame`` that is not lockwise's or threading's."""
    while frame is not None and frame.f_code.co_filename in INTERNAL_FILES:
        frame = frame.f_back
    return frame


def site_of(frame: Optional[FrameType]) -> Site:
    """The interned site of a lock made at ``frame``: located at the first user
    frame at or above it, named from the frame that assigns it.

    A name is right per instance: ``self.lock = Lock()`` in a class and in its
    subclass are two sites (``Base.lock``, ``Sub.lock``); so are two locks made
    on one line (``a = Lock(); b = Lock()``), and a lock a Thread makes for
    itself is named for what it is (``Thread._started``), at the user's line
    that made the Thread. Sites whose name depends on the instance are not
    cached by offset (their lookup reads the frame's ``self``).
    """
    user = user_frame(frame)
    if user is None:
        return UNKNOWN_SITE
    # Keyed by instruction offset first: f_lasti is a plain read, f_lineno
    # decodes the line table (measurable when a program creates many locks).
    code = user.f_code
    key = (id(code), user.f_lasti)
    entry: Any = _by_offset.get(key)
    if entry is not None and entry[0] is code:
        if len(entry) == 2:
            return entry[1]  # type: ignore[no-any-return]
        # (code, {class: site}, None): named per class of ``self`` at this
        # line (3 items: the C fast path, which reads 2, leaves it to us).
        known = entry[1].get(_owner_class(user))
        if known is not None:
            return known  # type: ignore[no-any-return]
    namer = _namer(frame) or user
    target = _target_at(namer)
    owner: Optional[type] = None
    if target.startswith(("self.", "cls.")):
        owner = _owner_class(namer)
    if namer is not user or owner is not None:
        # A name that depends on the instance: cached by plain ints and the
        # class (hashing a code object hashes its whole contents).
        dyn_key = (key, id(namer.f_code), namer.f_lasti, owner)
        known = _per_instance.get(dyn_key)
        if known is not None and known[0] is code and known[1] is namer.f_code:
            return known[2]
    site = _new_site(user, namer, target, owner)
    if generated(code.co_filename):
        pass  # nothing that keeps the code object alive
    elif namer is user and (owner is None or _sole_class(owner, code)):
        _by_offset[key] = (code, site)
    elif namer is user:
        if entry is None or entry[0] is not code or len(entry) != 3:
            entry = _by_offset[key] = (code, {}, None)
        entry[1][owner] = site
    else:
        _per_instance[dyn_key] = (code, namer.f_code, site)
    return site


def _sole_class(owner: type, code: CodeType) -> bool:
    """Does ``owner`` define the method running ``code``, with no subclass?
    Then every object reaching this line is an ``owner`` and the site's name
    cannot vary: it is cached by offset alone (the C fast path finds it). A
    subclass defined later is then named after its base, as a line's first
    instance named it before names were per class."""
    try:
        for klass in owner.__mro__:
            for value in vars(klass).values():
                func = getattr(value, "__func__", value)
                if getattr(func, "__code__", None) is code:
                    return klass is owner and not type.__subclasses__(klass)
    except Exception:  # an exotic class: name per instance
        pass
    return False


#: (id(user code), offset, id(naming code), offset, class) -> (user code,
#: naming code, site): sites whose name depends on the instance (see site_of).
_per_instance: dict[Any, tuple[CodeType, CodeType, Site]] = {}


def _new_site(user: FrameType, namer: FrameType, target: str, owner: Optional[type]) -> Site:
    code = user.f_code
    lineno = user.f_lineno
    if target.startswith(("self.", "cls.")):
        target = target.split(".", 1)[1]
    if target:
        label = f"{owner.__name__}.{target}" if owner is not None else target
    else:
        label = f"{os.path.basename(code.co_filename)}:{lineno}"
    if generated(code.co_filename):
        # not in _by_offset: that would keep the code object alive
        return _generated_site(code, lineno, label)
    fixed = namer is user and owner is None
    # The file name too: code objects compare equal across files.
    site_key: Any = (code.co_filename, code, lineno, label) if fixed else (
        code.co_filename, code, lineno, namer.f_code, namer.f_lineno, label, owner)
    site = _sites.get(site_key)
    if site is None:
        site = _sites.setdefault(site_key, Site(code.co_filename, lineno, code.co_name, label))
    return site


def watched_sites() -> int:
    """How many creation sites (lock classes) have made a lockwise lock so far."""
    return len(_sites)


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
    except Exception:  # as in _target_at
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
    thread = registered_thread(ident)
    if thread is not None:
        return str(thread.name)
    if ident == threading.main_thread().ident:
        return "MainThread"
    return f"Thread-{ident}"


def state_name(ts: Any) -> str:
    """The name of the thread of a ThreadState: its current one while it
    runs, the last one known once it has exited (not ``Thread-<ident>``)."""
    known = str(getattr(ts, "name", None) or "")
    if not getattr(ts, "alive", True):
        return known or f"Thread-{ts.ident}"
    name = thread_name(ts.ident)
    if known and name == f"Thread-{ts.ident}":
        return known  # exiting: no longer registered, but known
    try:
        ts.name = name
    except AttributeError:
        pass
    return name


def current_frames() -> dict[int, FrameType]:
    return sys._current_frames()
