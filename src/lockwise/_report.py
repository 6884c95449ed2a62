"""Text reports, built only from the plain data of findings.

Used for exception messages, warnings, the runner's stderr report and
``lockwise report``; nothing here runs on the hot path.

Every piece of text that comes from the program or from a report (thread,
lock and task names, paths, function names, source lines, summaries) goes
through :func:`_p`, which escapes control characters, ANSI escape sequences
and bidirectional overrides (``_findings.printable``), line feeds included:
a name can neither drive the terminal nor forge a line of the report.
"""

from __future__ import annotations

from ._findings import Finding, FrameInfo, StackInfo, printable, signature
from ._sites import in_stdlib

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Iterable

_RULE = {
    "cycle": "each thread waits for a lock held by the next one",
    "task-cycle": "each task waits for a lock held by the next one, or awaits it, and "
                  "nothing else can run on the loop (no ready callback, timer, watched "
                  "I/O or signal handler, and no other thread that may run) to release "
                  "a lock or cancel a task",
    "loop": "the thread runs the event loop that must resume the holder, and it is blocked",
    "stall": "every live thread is blocked on a lockwise primitive without a timeout, "
             "so none is left to release or notify",
}


def _p(text: Any) -> str:
    """``text`` as one printable line (see the module docstring)."""
    return printable(str(text))


def _lock(data: Any) -> str:
    if not data:
        return "?"
    return f"{_p(data.get('name', '?'))} ({_p(data.get('site', '?'))})"


def format_stack(frames: Iterable[FrameInfo], indent: str = "    ") -> list[str]:
    lines = []
    for f in frames:
        lines.append(f'{indent}File "{_p(f.filename)}", line {f.lineno}, in {_p(f.function)}')
        if f.line:
            lines.append(f"{indent}  {_p(f.line)}")
    return lines


def _stack_block(stack: StackInfo) -> list[str]:
    return [f"  {_p(stack.thread)}: {_p(stack.title)}"] + (
        format_stack(stack.frames) or ["    (no Python frames)"])


def _wait_text(wait: dict[str, Any]) -> str:
    kind = wait.get("kind")
    if kind == "lock":
        holder = "itself" if wait.get("held_by_self") else _p(wait.get("held_by", "?"))
        return f"waits for {_lock(wait.get('lock'))}, held by {holder}"
    if kind == "condition":
        return f"waits on {_lock(wait.get('lock'))} for a notify"
    if kind == "join":
        return f"joins thread {_p(wait.get('thread'))}"
    if kind == "await":
        via = " (through asyncio.gather)" if wait.get("via") == "gather" else ""
        return f"awaits task {_p(wait.get('task'))}{via}"
    return "is running"


def render_deadlock(finding: Finding) -> str:
    details = finding.details
    lines = [f"lockwise: deadlock: {_p(finding.summary)}", ""]
    for entry in details.get("threads", []):
        state = "" if entry.get("alive", True) else " (exited)"
        lines.append(f"  {_p(entry['thread'])}{state}")
        for held in entry.get("holds", []):
            via = held.get("acquired_from")
            lines.append(f"      holds {_lock(held['lock'])}, acquired at "
                         f"{_p(held['acquired_at'])}" + (f", from {_p(via)}" if via else ""))
        if entry.get("alive", True):
            lines.append(f"      {_wait_text(entry.get('waits_for', {}))}")
    rule = _RULE.get(details.get("rule", ""), "")
    if rule:
        if _waits_for_import(details.get("threads", [])):
            rule = f"{rule}; {_IMPORT_WHY}"
        lines += ["", f"  Why this never ends: {rule}."]
    victim = details.get("victim")
    if victim:
        others = "tasks" if details.get("asyncio") and details.get("rule") != "loop" else "threads"
        lines.append(f"  DeadlockError is raised in {_p(victim)}; the other {others} are "
                     "untouched.")
    lines += _fork_link_lines(details.get("fork_hazard"))
    for stack in finding.stacks:
        lines.append("")
        lines += _stack_block(stack)
    return "\n".join(lines)


#: What to do about a lock held by another thread at fork() (also in the finding).
FORK_FIX = ("acquire the lock around the fork (so that no other thread holds it), "
            "reset it in the child with os.register_at_fork(after_in_child=...), or start "
            "processes with the 'spawn' start method (multiprocessing.set_start_method"
            "('spawn') or get_context('spawn')) instead of forking a threaded process.")


def _fork_link_lines(link: Any) -> list[str]:
    """The lines a deadlock in a forked child gets when its lock was held by
    another thread of the parent at the fork (``details["fork_hazard"]``)."""
    if not isinstance(link, dict):
        return []
    return [f"  Forked while held: {_lock(link.get('lock'))} was held by "
            f"{_p(link.get('owner', '?'))} of the parent (pid {_p(link.get('parent_pid', '?'))})"
            f" when it forked, acquired at {_p(link.get('acquired_at', '?'))}; that thread does "
            f"not exist in this child (finding {_p(link.get('id', '?'))}).",
            f"  Fix: {FORK_FIX}"]


def render_fork_hazard(finding: Finding) -> str:
    details = finding.details
    lines = [f"lockwise: fork hazard: {_p(finding.summary)}", "",
             f"  {_lock(details.get('lock'))} was held by {_p(details.get('owner', '?'))}, "
             f"acquired at {_p(details.get('acquired_at', '?'))},",
             f"  when {_p(details.get('forking_thread', '?'))} called fork() "
             f"(finding {_p(details.get('id', '?'))})."]
    if details.get("reset_in_child"):
        lines.append("  logging resets this lock in the child: the child will not wait on it, "
                     "but what it guards may be half-updated.")
    else:
        lines.append("  In the child it stays held by a thread that does not exist there: a "
                     "wait on it is reported as a deadlock linked to this finding.")
    lines.append(f"  Fix: {FORK_FIX}")
    for stack in finding.stacks:
        lines.append("")
        lines += _stack_block(stack)
    return "\n".join(lines)


def brief_fork_hazard(finding: Finding) -> str:
    details = finding.details
    lines = [f"lockwise: fork hazard: {_p(finding.summary)}"]
    at = _at(_last(finding.stacks[0].frames)) if finding.stacks else ""
    lines.append(f"  {_name(details.get('lock'))} held by {_p(details.get('owner', '?'))}, "
                 f"acquired at {_p(short_path(str(details.get('acquired_at', '?'))))}"
                 + (f"; fork() at {at}" if at else ""))
    lines.append(f"  Fix: {FORK_FIX}")
    return "\n".join(lines)


#: Longest cycle drawn as an interleaving (the drawing has n rows of n columns).
SCENARIO_MAX = 8


def _scenario(cycle: list[dict[str, Any]]) -> list[str]:
    """Two (or n) columns showing one interleaving that deadlocks."""
    if not cycle:
        return []
    if len(cycle) > SCENARIO_MAX:
        return [f"  (a cycle of {len(cycle)} locks: the interleaving is not drawn)"]
    columns = []
    seen: dict[str, int] = {}
    for edge in cycle:
        name = _p(edge["thread"])
        seen[name] = seen.get(name, 0) + 1
        columns.append(name if seen[name] == 1 else f"{name} (again)")
    n = len(cycle)
    width = max(30, max(len(f"acquire({_p(e['from']['name'])})") + 18 for e in cycle))
    rows: list[list[str]] = []
    for i, edge in enumerate(cycle):
        row = [""] * n
        row[i] = f"acquire({_p(edge['from']['name'])})"
        rows.append(row)
    for i in reversed(range(n)):
        row = [""] * n
        holder = columns[(i + 1) % n]
        row[i] = f"acquire({_p(cycle[i]['to']['name'])})   <- waits for {holder}"
        rows.append(row)
    out = ["  " + "".join(c.ljust(width) for c in columns),
           "  " + "".join(("-" * len(c)).ljust(width) for c in columns)]
    out += ["  " + "".join(cell.ljust(width) for cell in row).rstrip() for row in rows]
    out.append("  *** DEADLOCK ***")
    return out


def render_lock_order(finding: Finding) -> str:
    cycle = finding.details.get("cycle", [])
    lines = [f"lockwise: potential deadlock: {_p(finding.summary)}", ""]
    if finding.details.get("single_thread"):
        lines.append("  All these orders were seen in one thread; two threads running this code at")
        lines.append("  the same time can deadlock as follows:")
    else:
        lines.append("  The threads below took these locks in opposite orders; this run did not")
        lines.append("  freeze, but this interleaving would:")
    lines.append("")
    lines += _scenario(cycle)
    for edge in cycle:
        lines.append("")
        lines.append(f"  {_p(edge['thread'])} acquired {_lock(edge['from'])}:")
        lines += format_stack([FrameInfo.from_dict(f) for f in edge["first_stack"]])
        lines.append(f"  then acquired {_lock(edge['to'])} while holding it:")
        lines += format_stack([FrameInfo.from_dict(f) for f in edge["second_stack"]])
    lines += ["", "  Fix: take these locks in one global order everywhere, or silence a reviewed",
              "  false alarm with lockwise.declare_order(first, second)."]
    return "\n".join(lines)


def render_table(rows: list[dict[str, Any]]) -> list[str]:
    """The table of locks with holders and waiters (watchdog and snapshot)."""
    if not rows:
        return ["  (no lock is held or waited for)"]
    lines = []
    for row in rows:
        holder = _p(row.get("owner") or "-")
        waiters = ", ".join(_p(w) for w in row.get("waiters", [])) or "-"
        lines.append(f"  {_lock(row.get('lock'))}: held by {holder}; waiting: {waiters}")
    return lines


def render_hang(finding: Finding) -> str:
    details = finding.details
    lines = [f"lockwise: hang: {_p(finding.summary)}", "", "  Locks:"]
    lines += render_table(details.get("table", []))
    for stack in finding.stacks:
        lines.append("")
        lines += _stack_block(stack)
    return "\n".join(lines)


def confirmation_status(finding: Finding) -> str:
    """A lock-order finding's status: unconfirmed, or what ``lockwise confirm``
    found (confirmed, with the replay command; not confirmed, with the reason)."""
    conf = finding.details.get("confirmation")
    if not isinstance(conf, dict):
        return ("Status: unconfirmed (lockwise confirm PROGRAM steers the threads into it, "
                "or says why it cannot happen)")
    if conf.get("status") == "confirmed":
        schedule = conf.get("schedule")
        replay = schedule.get("replay") if isinstance(schedule, dict) else None
        return ("Status: confirmed: lockwise steered the threads into this deadlock"
                + (f"; replay: {replay}" if replay else ""))
    return (f"Status: not confirmed after {conf.get('runs', '?')} directed run(s): "
            f"{conf.get('reason', 'no reason given')}")


def render(finding: Finding) -> str:
    if finding.kind == "lock-order" and "confirmation" in finding.details:
        text = printable(finding.text, newlines=True) if finding.text else \
            render_lock_order(finding)
        return text + "\n\n  " + _p(confirmation_status(finding))
    if finding.text:
        return printable(finding.text, newlines=True)
    if finding.kind == "deadlock":
        return render_deadlock(finding)
    if finding.kind == "lock-order":
        return render_lock_order(finding)
    if finding.kind == "hang":
        return render_hang(finding)
    if finding.kind == "fork-hazard":
        return render_fork_hazard(finding)
    return _p(finding.summary)


# ---------------------------------------------------------------- brief reports
#
# What a person reads at a glance: the default on stderr, the message of a
# DeadlockError, and (first line only) a warning. A deadlock or a lock-order
# inversion fits a screen: who holds and wants what, at which user line, and
# the fix. The full report (every stack, the interleaving drawn) stays in
# ``render``: ``lockwise run --verbose``, the JSON, ``lockwise report``, HTML.

#: Threads (or cycle edges) listed one per line before "... and N more".
BRIEF_MAX = 8

_FIX = {
    "self": "this thread already holds the lock it waits for: use an RLock, or release "
            "the lock before taking it again (a method called with the lock held, a "
            "__del__, a signal or logging handler may re-enter).",
    "cycle": "take these locks in one global order everywhere.",
    "task-cycle": "take these locks in one global order everywhere, and never await a task "
                  "that needs a lock you hold.",
    "loop": "do not block the event loop's thread on a lock a task holds: use "
            "lockwise.aio / asyncio locks, or run the blocking call in an executor.",
    "stall": "make sure something will set, notify or release what these threads wait "
             "for, or give the waits a timeout.",
}

#: The fix when a thread of the deadlock waits for a module's import lock.
_IMPORT_FIX = ("a module's import lock is held until its top level finishes: import the "
               "module before taking the lock (or at start-up), and do not wait for locks "
               "or threads in a module's top level.")

#: Why an import lock's wait never ends (the full report).
_IMPORT_WHY = ("an import lock is released only by the thread running that module's top "
               "level, when it finishes")


def _waits_for_import(threads: Any) -> bool:
    """Whether a thread of a deadlock waits for a module's import lock."""
    for entry in threads:
        wait = entry.get("waits_for", {}) if isinstance(entry, dict) else {}
        lock = wait.get("lock") if isinstance(wait, dict) else None
        if isinstance(lock, dict) and lock.get("type") == "import lock":
            return True
    return False


_ORDER_FIX = ("take these locks in one global order everywhere, or silence a reviewed "
              "false alarm with lockwise.declare_order(first, second).")


#: The standard library's directories and the site-packages directories, each
#: ending with a separator, found once. They are read from ``os.__file__`` and
#: ``sys.path``, not ``sysconfig``: ``sysconfig.get_paths()`` takes sysconfig's
#: lock, and the first report runs in lockwise's reporter thread, so a fork by
#: the program at that moment was a fork hazard of lockwise's making.
_library_dirs: list[tuple[tuple[str, ...], tuple[str, ...]]] = []


def _installed_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the standard library's directories, the site-packages directories); cached."""
    if not _library_dirs:
        import os
        import sys

        stdlib = [os.path.dirname(os.__file__)]
        sites = []
        for entry in sys.path:
            if not isinstance(entry, str) or not entry:
                continue
            name = os.path.basename(entry.rstrip(os.sep))
            if name == "lib-dynload":  # the platform library's extension modules
                stdlib.append(os.path.dirname(entry.rstrip(os.sep)))
            elif name in ("site-packages", "dist-packages"):
                sites.append(entry.rstrip(os.sep))
        found = (tuple(dict.fromkeys(d + os.sep for d in stdlib)),
                 tuple(dict.fromkeys(d + os.sep for d in sites)))
        _library_dirs[:] = [found]  # one store: a racing thread computes the same
    return _library_dirs[0]


def _prefixes() -> list[str]:
    """Directories whose prefix the brief report drops: the working directory
    (paths read as the user typed them) and the standard library's (``queue.py:62``)."""
    import os

    out = list(_installed_dirs()[0])
    try:
        out.append(os.getcwd() + os.sep)
    except OSError:
        pass
    return sorted(set(out), key=len, reverse=True)


def short_path(filename: str) -> str:
    """``filename`` relative to the working directory or the standard library."""
    for prefix in _prefixes():
        if filename.startswith(prefix):
            return filename[len(prefix):]
    return filename


def shorten(text: str) -> str:
    """``text`` with the working directory's and the standard library's prefixes dropped."""
    for prefix in _prefixes():
        text = text.replace(prefix, "")
    return text


def _is_user(frame: Any) -> bool:
    """Is ``frame`` the program's own code (not the standard library, the
    import system's frozen modules, or an installed package)?"""
    filename = frame.get("file", "") if isinstance(frame, dict) else frame.filename
    return not (in_stdlib(filename) or filename.startswith(_installed_dirs()[1]))


def _at(frame: Any) -> str:
    """``path:line in function`` of a FrameInfo or a frame dict (or "")."""
    if frame is None:
        return ""
    if isinstance(frame, dict):
        frame = FrameInfo.from_dict(frame)
    return f"{_p(short_path(frame.filename))}:{frame.lineno} in {_p(frame.function)}"


def _last(frames: Any) -> Any:
    """The innermost frame of the program's own code (else the innermost)."""
    if not frames:
        return None
    for frame in reversed(frames):
        if _is_user(frame):
            return frame
    return frames[-1]


def _name(data: Any) -> str:
    return _p(data.get("name", "?")) if data else "?"


def _more(lines: list[str], total: int, what: str) -> None:
    if total > BRIEF_MAX:
        lines.append(f"  ... and {total - BRIEF_MAX} more {what}")


def _brief_wait(wait: dict[str, Any]) -> str:
    kind = wait.get("kind")
    if kind == "lock":
        holder = "itself" if wait.get("held_by_self") else _p(wait.get("held_by", "?"))
        return f"wants {_name(wait.get('lock'))} (held by {holder})"
    if kind == "condition":
        return f"waits on {_name(wait.get('lock'))} for a notify"
    return _wait_text(wait)


def _taken_at(held: dict[str, Any]) -> str:
    """`` (taken at path:line)`` for a held lock, when known."""
    where = str(held.get("acquired_at") or "?")
    if where == "?":
        return ""
    where = _p(short_path(where.split(' in ', 1)[0]))
    via = held.get("acquired_from")
    if via:  # taken inside the standard library: the program's line first
        return f" (taken at {_p(short_path(str(via).split(' in ', 1)[0]))}, in {where})"
    return f" (taken at {where})"


def brief_deadlock(finding: Finding) -> str:
    details = finding.details
    rule = str(details.get("rule", ""))
    threads = list(details.get("threads", []))
    lines = [f"lockwise: deadlock: {_p(finding.summary)}"]
    where = {stack.thread: _last(stack.frames) for stack in finding.stacks}
    for entry in threads[:BRIEF_MAX]:
        name = _p(entry.get("thread", "?"))
        holds = ", ".join(_name(h.get("lock")) + _taken_at(h) for h in entry.get("holds", []))
        parts = []
        if holds:
            parts.append(f"holds {holds}")
        if entry.get("alive", True):
            parts.append(_brief_wait(entry.get("waits_for", {})))
        else:
            parts.append("has exited")
        at = _at(where.get(entry.get("thread")))
        lines.append(f"  {name} " + ", ".join(parts) + (f", at {at}" if at else ""))
    _more(lines, len(threads), "threads")
    self_wait = len(threads) == 1 and bool(threads[0].get("waits_for", {}).get("held_by_self"))
    if self_wait:  # where it was taken first is what the reader looks for
        for held in threads[0].get("holds", [])[:BRIEF_MAX]:
            lock = held.get("lock") or {}
            made = _p(short_path(str(lock.get("site", "?"))))
            lines.append(f"  {_name(lock)} was made at {made}")
    victim = details.get("victim")
    if victim:
        others = "tasks" if details.get("asyncio") and rule != "loop" else "threads"
        lines.append(f"  DeadlockError is raised in {_p(victim)}"
                     + (f"; the other {others} carry on." if len(threads) > 1 else "."))
    link = details.get("fork_hazard")
    if isinstance(link, dict):
        lines.append(f"  {_name(link.get('lock'))} was held by {_p(link.get('owner', '?'))} "
                     f"of the parent (pid {_p(link.get('parent_pid', '?'))}) when it forked "
                     f"(finding {_p(link.get('id', '?'))})")
        lines.append(f"  Fix: {FORK_FIX}")
        return "\n".join(lines)
    fix = _FIX.get("self" if self_wait else rule)
    if fix and _waits_for_import(threads):
        fix = _IMPORT_FIX
    if fix:
        lines.append(f"  Fix: {fix}")
    return "\n".join(lines)


def brief_lock_order(finding: Finding) -> str:
    cycle = list(finding.details.get("cycle", []))
    lines = [f"lockwise: potential deadlock: {_p(finding.summary)}"]
    if finding.details.get("single_thread"):
        lines.append("  (all orders seen in one thread: two threads running this code can "
                     "deadlock)")
    for edge in cycle[:BRIEF_MAX]:
        first = _at(_last(edge.get("first_stack")))
        second = _at(_last(edge.get("second_stack")))
        lines.append(f"  {_p(edge.get('thread', '?'))} took {_name(edge.get('from'))}"
                     + (f" at {first}" if first else "")
                     + f", then {_name(edge.get('to'))}"
                     + (f" at {second}" if second else ""))
    _more(lines, len(cycle), "edges")
    lines.append(f"  Fix: {_ORDER_FIX}")
    return "\n".join(lines)


def brief_hang(finding: Finding) -> str:
    rows = list(finding.details.get("table", []))
    lines = [f"lockwise: hang: {_p(finding.summary)}"]
    for stack in finding.stacks[:BRIEF_MAX]:
        at = _at(_last(stack.frames))
        lines.append(f"  {_p(stack.thread)}: {_p(stack.title)}" + (f", at {at}" if at else ""))
    _more(lines, len(finding.stacks), "threads")
    if rows:
        lines.append("  Locks:")
        lines += render_table(rows[:BRIEF_MAX])
        _more(lines, len(rows), "locks")
    return "\n".join(lines)


def render_brief(finding: Finding) -> str:
    """The short report of ``finding`` (see above); the full one is ``render``."""
    try:
        if finding.kind == "deadlock" and finding.details.get("threads"):
            return shorten(brief_deadlock(finding))
        if finding.kind == "lock-order" and finding.details.get("cycle"):
            return shorten(brief_lock_order(finding))
        if finding.kind == "hang":
            return shorten(brief_hang(finding))
        if finding.kind == "fork-hazard" and finding.details:
            return shorten(brief_fork_hazard(finding))
    except Exception:  # a report loaded from a file may be shaped unexpectedly
        pass
    if finding.text:
        return printable(finding.text, newlines=True)
    return f"lockwise: {_p(finding.kind)}: {_p(finding.summary)}"


def repeat_counts(findings: list[Finding]) -> list[tuple[Finding, int]]:
    """The findings merged by ``_findings.signature``: the first of each, with
    how many times it occurred (per process: the copies listed, or the count
    the first copy carries in ``details["occurrences"]``, if larger)."""
    groups: dict[Any, list[Finding]] = {}
    for f in findings:
        groups.setdefault(signature(f), []).append(f)
    out = []
    for group in groups.values():
        copies: dict[int, int] = {}
        counted: dict[int, int] = {}
        for f in group:
            copies[f.pid] = copies.get(f.pid, 0) + 1
            n = int(f.details.get("occurrences", 1) or 1)
            counted[f.pid] = max(counted.get(f.pid, 0), n)
        out.append((group[0], sum(max(n, counted[pid]) for pid, n in copies.items())))
    return out


def render_summary(findings: list[Finding]) -> str:
    """One line per distinct finding; repeats (one signature) are merged into
    one line that says how many times it was seen."""
    if not findings:
        return "lockwise: no findings."
    merged = repeat_counts(findings)
    counts: dict[str, int] = {}
    for f, n in merged:
        counts[f.kind] = counts.get(f.kind, 0) + n
    total = sum(n for _f, n in merged)
    parts = ", ".join(f"{n} {_p(kind)}" for kind, n in sorted(counts.items()))
    lines = [f"lockwise: {total} finding(s): {parts}"]
    lines += [f"  - [{_p(f.kind)}] {_p(shorten(f.summary))}"
              + (f" (seen {n} times)" if n > 1 else "") for f, n in merged]
    return "\n".join(lines)


def watched_line(sites: int, since: str) -> str:
    """What was watched, so that "no findings" is not read as "checked everything"."""
    return (f"lockwise: watched the locks {since}, from {sites} creation "
            f"site{'s' if sites != 1 else ''}; locks made before lockwise was installed "
            "are not watched")


# ---------------------------------------------------------------- profile


def format_ns(ns: Any) -> str:
    """A duration in ns for humans: ``850ns``, ``12.4us``, ``3.20ms``, ``1.52s``."""
    if ns is None:
        return "-"
    value = float(ns)
    if value < 1_000:
        return f"{value:.0f}ns"
    if value < 1_000_000:
        return f"{value / 1_000:.1f}us"
    if value < 1_000_000_000:
        return f"{value / 1_000_000:.2f}ms"
    return f"{value / 1_000_000_000:.2f}s"


_PROFILE_COLUMNS = ("acquired", "contended", "wait-total", "wait-max", "wait-mean", "wait-p99",
                    "hold-total", "hold-max", "hold-mean", "hand-offs")


def _count(value: Any) -> str:
    return "-" if value is None else str(value)


def _short_site(site: str) -> str:
    path, _sep, line = site.rpartition(":")
    if not path:
        return site
    return f"{path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{line}"


def profile_header(data: dict[str, Any]) -> str:
    """One line: what the profile covers and whether totals are scaled."""
    n = len(data.get("locks", []))
    sample = int(data.get("sample", 1) or 1)
    how = ("every contention timed" if sample <= 1 else
           f"1 in {sample} contentions timed, at random; wait totals are estimates "
           "(per lock: its contentions x the mean of its timed waits), no hold times")
    return (f"lockwise profile: {n} lock class{'es' if n != 1 else ''}, "
            f"{format_ns(data.get('duration_ns', 0))} profiled; {how}")


def render_profile(data: dict[str, Any], limit: int = 20, sites: int = 3) -> str:
    """The contention table (like the kernel's lock_stat), most total wait first.

    ``data`` is a profile dict (``Profiler.to_dict()`` or a JSON report's
    ``"profile"``). Each contended lock is followed by its top waiter sites
    (where threads waited) and holder sites (where the holder had acquired it).
    """
    locks = list(data.get("locks", []))
    lines = [profile_header(data)]
    if not locks:
        lines.append("  (no lockwise lock was acquired while profiling)")
        return "\n".join(lines)
    names = [f"{_p(d.get('name', '?'))} ({_p(_short_site(str(d.get('site', '?'))))})"
             for d in locks[:limit]]
    width = min(max(len("lock"), *(len(n) for n in names)), 48)
    cells: list[list[str]] = []
    for d in locks[:limit]:
        cells.append([_count(d.get("acquisitions")), _count(d.get("contentions")),
                      format_ns(d.get("wait_total_ns")), format_ns(d.get("wait_max_ns")),
                      format_ns(d.get("wait_mean_ns")), format_ns(d.get("wait_p99_ns")),
                      format_ns(d.get("hold_total_ns")), format_ns(d.get("hold_max_ns")),
                      format_ns(d.get("hold_mean_ns")), _count(d.get("handoffs"))])
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(_PROFILE_COLUMNS)]
    lines.append("  " + "lock".ljust(width) + "".join(
        "  " + h.rjust(w) for h, w in zip(_PROFILE_COLUMNS, widths)))
    for name, row, d in zip(names, cells, locks):
        shown = name if len(name) <= width else name[:width - 3] + "..."
        lines.append("  " + shown.ljust(width) + "".join(
            "  " + c.rjust(w) for c, w in zip(row, widths)))
        unfinished = d.get("unfinished")
        if isinstance(unfinished, int) and unfinished > 0:
            lines.append(f"      {unfinished} wait{'s' if unfinished != 1 else ''} still in "
                         "progress when the profile ended (counted up to its end)")
        for label, key in (("waited at", "waiters"), ("held from", "holders")):
            for s in list(d.get(key, []))[:sites]:
                where = (f"{_p(s.get('site', '?'))} in {_p(s.get('function', '?'))}"
                         if s.get("site", "?") != "?" else
                         "an unknown site (taken before profiling began, or outside Python)")
                lines.append(f"      {label} {where}"
                             f"  ({s.get('count', 0)}x, {format_ns(s.get('wait_ns'))})")
    if len(locks) > limit:
        lines.append(f"  ... and {len(locks) - limit} more lock classes (see the JSON report)")
    return "\n".join(lines)
