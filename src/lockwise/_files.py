"""Files lockwise writes: private temporary files, atomic replacement, and
the per-user directory, checked the way ssh checks ``~/.ssh``.

Every file lockwise writes goes through here:

* :func:`make_temp` creates a new file (``O_CREAT | O_EXCL | O_NOFOLLOW``,
  mode 0600) under a name drawn from 64 random bits, so another user can
  neither predict it nor plant a symlink there;
* :func:`atomic_write` writes a whole file that way next to its target and
  ``os.replace``-s it over the target: readers see the old file or the new
  one, never a half-written one, and a symlink at the target is replaced,
  not followed;
* :func:`user_dir` is the per-user directory (the shared wait-for store,
  the lock files of JSON report merges, the temporary reports of
  ``lockwise run``). It is ``LOCKWISE_SHARED_DIR`` (or
  ``configure(shared_dir=...)``) if set, else ``$XDG_RUNTIME_DIR/lockwise``
  when ``$XDG_RUNTIME_DIR`` is a private directory, else
  ``$TMPDIR/lockwise-<uid>``. It is created with mode 0700 and used only if
  :func:`dir_problem` finds nothing wrong: not a symlink (``lstat``), a
  directory, owned by this user, not writable by group or others, and in a
  parent that others cannot rename it out of (not writable by group or
  others, or sticky). Nothing is ever chmod-ed or chown-ed to make it fit:
  a directory someone else could have written to is refused as a whole.

Cost: a few system calls; no import beyond ``os`` (this runs at the start of
every ``lockwise run``). Limits: the checks are POSIX ones; on Windows
(no ``getuid``) the directory is used as it is.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Optional, TextIO

#: Flags for every file lockwise opens for writing in a directory it did not make.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def temp_root() -> str:
    """$TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, else the current directory
    (``tempfile.gettempdir`` without importing tempfile: ~6 ms of start-up)."""
    candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    return next((d for d in candidates + ["/tmp", "/var/tmp"] if d and os.path.isdir(d)),
                os.getcwd())


def make_temp(directory: Optional[str], prefix: str, suffix: str) -> tuple[int, str]:
    """``tempfile.mkstemp`` without importing tempfile: a new file, readable
    and writable by its owner only, under a name no other file has.
    ``directory`` None: :func:`temp_root`."""
    if directory is None:
        directory = temp_root()
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW
    while True:
        path = os.path.join(directory, f"{prefix}{os.urandom(8).hex()}{suffix}")
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:  # 64 random bits taken already: draw again
            continue


def atomic_write(path: str, write: Callable[[TextIO], object]) -> None:
    """Write the file at ``path`` through ``write(text_file)``, atomically:
    a private temporary file in the same directory, then ``os.replace``.
    The temporary file is removed if anything fails."""
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp = make_temp(directory, f".{base}.", ".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (maybe another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


# ---------------------------------------------------------------- the per-user directory


def _uid() -> Optional[int]:
    return os.geteuid() if hasattr(os, "geteuid") else None


def dir_problem(path: str) -> Optional[str]:
    """What makes ``path`` unfit as a private directory, or None if it is fit."""
    uid = _uid()
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if uid is None:
        return None
    if st.st_uid != uid:
        return f"is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if st.st_mode & 0o022:
        return (f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}; "
                "expected 0700)")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        pst = os.stat(parent)
    except OSError as exc:
        return f"has a parent that cannot be examined ({exc.strerror or exc})"
    if pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
        return (f"is in {parent}, which others can write to without the sticky bit "
                "(they could rename it and put theirs in its place)")
    return None


def ensure_private_dir(path: str) -> Optional[str]:
    """Create ``path`` (mode 0700) if it is missing; what makes it unfit, or None."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot be created ({exc.strerror or exc})"
    return dir_problem(path)


def default_user_dir(configured: Optional[str] = None) -> str:
    """Where the per-user directory is (see the module docstring); not checked."""
    configured = configured or os.environ.get("LOCKWISE_SHARED_DIR")
    if configured:
        return os.path.abspath(configured)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and dir_problem(runtime) is None:
        return os.path.join(runtime, "lockwise")
    uid = _uid()
    return os.path.join(temp_root(), f"lockwise-{uid if uid is not None else 'user'}")


def user_dir(configured: Optional[str] = None) -> tuple[str, Optional[str]]:
    """The per-user directory and what makes it unfit (None: use it). Created
    if missing and checked at every call (a few system calls; callers call it
    once per store connection or report merge), so a directory removed by a
    temporary-file cleaner is made again."""
    path = default_user_dir(configured)
    return path, ensure_private_dir(path)


def remove_stale(directory: str, prefix: str) -> None:
    """Remove ``<prefix><pid>-...`` files of ``directory`` whose process is gone
    (the per-user directory is per machine: pids are this machine's)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    me = os.getpid()
    for name in names:
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == me or pid_alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def refusal(path: str, problem: str, merges: bool = True) -> str:
    """The one line that says a private directory is refused, and what is off
    (``merges``: it is the per-user directory, which JSON report merges use too)."""
    also = " and JSON report merges across processes are not serialised" if merges else ""
    return (f"not using {path}: it {problem}; deadlock detection across processes is off "
            f"(FileLocks still exclude each other){also}. Use a private directory "
            "(mode 0700) or set LOCKWISE_SHARED_DIR")


def open_private(path: str, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """Open a file of the per-user directory: never through a symlink, and
    only a regular file owned by this user (OSError otherwise)."""
    fd = os.open(path, flags | NOFOLLOW, 0o600)
    try:
        st = os.fstat(fd)
        uid = _uid()
        if not stat.S_ISREG(st.st_mode) or (uid is not None and st.st_uid != uid):
            raise PermissionError(f"{path} is not a regular file owned by this user")
    except BaseException:
        os.close(fd)
        raise
    return fd
