"""``lockwise confirm``: steer threads into a predicted lock-order deadlock.

1. One collecting run under ``lockwise run`` (or ``--from-report``) gives the
   lock-order findings.
2. For each finding, up to ``runs`` directed runs: the program again, in a
   subprocess under ``lockwise run --json``, with the scheduler of
   ``_schedule`` pausing each thread before the second acquire of an edge of
   the cycle (plan: the edges' lock creation sites and second-acquire lines).
3. A run confirms the finding only when lockwise's own detector recorded a
   ``deadlock`` finding whose locks are exactly the cycle's lock sites (the
   JSON report of that run says so, not the scheduler). The first such run's
   seed and ordered pause points are the schedule ``--replay`` re-runs.
4. Otherwise the reason comes from the scheduler's log of those runs: what the
   other threads of the cycle were doing when a paused thread had to be let
   go (blocked on a gate, in a join, on an Event or a queue), a pause point no
   thread reached, or the time limit.

Every directed run is a subprocess in its own session, killed (the whole
process group) after ``timeout`` seconds; such a run counts as a run and gives
the "timeout" reason if nothing better is known.

Exit status: 3 when at least one finding is confirmed (``--replay``: when the
deadlock was reproduced), 0 otherwise, 2 on bad input.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

from ._files import atomic_write

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional, TextIO

CONFIRMED_STATUS = 3
USAGE_STATUS = 2
DEFAULT_RUNS = 5
DEFAULT_TIMEOUT = 30.0
DEFAULT_PAUSE = 2.0
#: What a `lockwise run` (or LOCKWISE=1) around us exported: not for our runs.
#: LOCKWISE_PURE and LOCKWISE_REQUIRE_SPEEDUPS are kept.
_RUN_ENV = ("LOCKWISE", "LOCKWISE_JSON", "LOCKWISE_HANG_TIMEOUT", "LOCKWISE_FAIL_ON",
            "LOCKWISE_QUIET", "LOCKWISE_RUN_ID", "LOCKWISE_SCHEDULE")


class ConfirmError(Exception):
    """Bad input: one line for the user (exit status 2)."""


class Target:
    """The program to run: a script or ``-m module``, its arguments, its cwd."""

    def __init__(self, name: str, args: list[str], module: bool,
                 cwd: Optional[str] = None) -> None:
        self.name = name
        self.args = list(args)
        self.module = module
        self.cwd = os.getcwd() if cwd is None else cwd

    def argv(self) -> list[str]:
        return (["-m", self.name] if self.module else [self.name]) + self.args

    def to_dict(self) -> dict[str, Any]:
        return {"argv": self.argv(), "cwd": self.cwd}

    @classmethod
    def from_dict(cls, data: Any) -> Target:
        argv = data.get("argv") if isinstance(data, dict) else None
        cwd = data.get("cwd") if isinstance(data, dict) else None
        if (not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv)
                or not isinstance(cwd, str)):
            raise ConfirmError("the schedule's 'command' is not {argv: [...], cwd: ...}")
        if argv[0] == "-m":
            if len(argv) < 2:
                raise ConfirmError("the schedule's command has -m without a module")
            return cls(argv[1], argv[2:], True, cwd)
        return cls(argv[0], argv[1:], False, cwd)


class RunResult:
    """What one subprocess run left: its report's findings and the scheduler log."""

    def __init__(self, status: Optional[int], timed_out: bool, elapsed: float,
                 findings: list[dict[str, Any]], events: list[dict[str, Any]],
                 seed: int) -> None:
        self.status = status
        self.timed_out = timed_out
        self.elapsed = elapsed
        self.findings = findings
        self.events = events
        self.seed = seed


# ------------------------------------------------------------- the plan


def points_of(finding: dict[str, Any]) -> list[dict[str, Any]]:
    """The pause points of a lock-order finding: one per edge of its cycle."""
    points = []
    for edge in finding.get("details", {}).get("cycle", []):
        second = edge.get("second_stack") or []
        at = f"{second[-1]['file']}:{second[-1]['line']}" if second else None
        points.append({"held": edge["from"]["site"], "wants": edge["to"]["site"], "at": at,
                       "thread": edge.get("thread", "")})
    return points


def cycle_sites(finding: dict[str, Any]) -> frozenset[str]:
    return frozenset(p["held"] for p in points_of(finding)) | frozenset(
        p["wants"] for p in points_of(finding))


def caught(result: RunResult, sites: frozenset[str]) -> Optional[dict[str, Any]]:
    """The deadlock finding of ``result`` through exactly the locks of ``sites``."""
    for f in result.findings:
        if f.get("kind") != "deadlock":
            continue
        got = frozenset(str(lock.get("site")) for lock in f.get("locks", [])
                        if isinstance(lock, dict))
        if got and got == sites:
            return f
    return None


# ------------------------------------------------------------ subprocesses


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for key in _RUN_ENV:
        env.pop(key, None)  # the child's `lockwise run` sets what it needs
    env.update(extra)
    return env


def run_once(target: Target, workdir: str, tag: str, timeout: float,
             plan: Optional[dict[str, Any]] = None) -> RunResult:
    """Run ``target`` under ``lockwise run --json`` (steered by ``plan``)."""
    report = os.path.join(workdir, f"{tag}.json")
    extra: dict[str, str] = {}
    log: Optional[str] = None
    seed = 0
    if plan is not None:
        log = os.path.join(workdir, f"{tag}.log")
        plan = dict(plan, log=log)
        seed = int(plan.get("seed", 0))
        plan_path = os.path.join(workdir, f"{tag}.plan.json")
        with open(plan_path, "w", encoding="utf-8") as f:
            json.dump(plan, f)
        extra["LOCKWISE_SCHEDULE"] = plan_path
    cmd = [sys.executable, "-m", "lockwise", "run", "--quiet", "--fail-on", "none",
           "--json", report, *target.argv()]
    start = time.monotonic()
    timed_out = False
    status: Optional[int] = None
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(cmd, cwd=target.cwd, env=_child_env(extra),
                                stdin=subprocess.DEVNULL, stdout=devnull, stderr=devnull,
                                start_new_session=True)
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc)
    elapsed = time.monotonic() - start
    return RunResult(status, timed_out, elapsed, _read_findings(report),
                     _read_events(log), seed)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (OSError, AttributeError):
        proc.kill()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _read_findings(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    found = data.get("findings") if isinstance(data, dict) else None
    return [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []


def _read_events(path: Optional[str]) -> list[dict[str, Any]]:
    if path is None:
        return []
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    out.append(entry)
    except OSError:
        pass
    return out


# ---------------------------------------------------------------- reasons


_GATE = ("gate lock: whenever a thread stood at its pause point, the other threads of the "
         "cycle were blocked on a lock (or semaphore) it held, so the cycle's locks were "
         "never held together")
_JOIN = ("happens-before (join): the paused thread is joined before the other order is "
         "taken, so the scheduler cannot run both orders at once")
_EVENT = ("happens-before (Event): the other threads of the cycle wait on an Event that is "
          "set after the first order, so both orders never overlap")
_QUEUE = ("happens-before (queue hand-off): the other threads of the cycle wait on a queue "
          "that is filled after the first order, so both orders never overlap")
_NOTIFY = ("happens-before (Condition notify): the other threads of the cycle wait for a "
           "notify sent after the first order, so both orders never overlap")


def _classify(tag: str, on: str) -> Optional[tuple[int, str]]:
    """(rank, reason) for one thread's state while another was paused."""
    if tag == "lock-paused" or (tag == "notify" and "Semaphore" in on):
        return 0, _GATE
    if tag == "notify":
        if "Event" in on:
            return 1, _EVENT
        if "Queue" in on:
            return 2, _QUEUE
        return 3, _NOTIFY
    if tag == "join-paused":
        return 4, _JOIN
    return None


def reason_of(points: list[dict[str, Any]], results: list[RunResult]) -> str:
    """Why no run formed the deadlock, from the scheduler logs (see docstring).

    The state of the cycle's other threads (named in the finding) while a
    thread waited at its pause point in vain is the evidence; other threads'
    states count only when the cycle's threads gave none (a main thread
    joining the paused thread before it starts the other one)."""
    threads = {p["thread"] for p in points}
    reached = {e.get("point") for r in results for e in r.events if e.get("event") == "pause"}
    best: Optional[tuple[int, str]] = None
    for r in results:
        for e in r.events:
            if e.get("event") not in ("release-stuck", "release-timeout"):
                continue
            for part in str(e.get("others", "")).split():
                name, _, what = part.partition("=")
                tag, _, on = what.partition(":")
                found = _classify(tag, on)
                if found is None:
                    continue
                rank = found[0] + (0 if name in threads else 10)
                if best is None or rank < best[0]:
                    best = (rank, found[1])
    timeouts = sum(r.timed_out for r in results)
    if results and timeouts == len(results):
        return f"timeout: all {timeouts} run(s) exceeded --timeout"
    if best is not None:
        return best[1]
    missing = [i for i in range(len(points)) if i not in reached]
    if missing:
        p = points[missing[0]]
        where = f" at {p['at']}" if p["at"] else ""
        return (f"second acquire never reached: no thread acquired {p['wants']}{where} "
                f"while holding {p['held']} in the directed runs")
    if timeouts:
        return f"timeout: {timeouts} of {len(results)} run(s) exceeded --timeout"
    if any(e.get("event") == "release-timeout" for r in results for e in r.events):
        return ("pause bound: the other threads of the cycle never reached their pause "
                "points while one waited at its own (they were running, or blocked outside "
                "lockwise: sleep, I/O, C code)")
    return "the threads never stood at their pause points together in any run"


# ------------------------------------------------------------------ confirm


def confirm_finding(target: Target, finding: dict[str, Any], runs: int, timeout: float,
                    workdir: str, tag: str, seed: int = 0,
                    pause_timeout: float = DEFAULT_PAUSE) -> dict[str, Any]:
    """The ``"confirmation"`` of one lock-order finding after up to ``runs`` runs."""
    points = points_of(finding)
    sites = cycle_sites(finding)
    if not points:
        return {"status": "not-confirmed", "reason": "the finding has no cycle to steer into",
                "runs": 0}
    results: list[RunResult] = []
    start = time.monotonic()
    for r in range(runs):
        plan = {"seed": seed + r, "points": _plan_points(points),
                "pause_timeout": pause_timeout}
        result = run_once(target, workdir, f"{tag}-run{r}", timeout, plan)
        results.append(result)
        deadlock = caught(result, sites)
        if deadlock is not None:
            return {
                "status": "confirmed",
                "reason": (f"DeadlockError raised by lockwise's detector in run {r + 1}: "
                           f"{deadlock.get('summary', '')}"),
                "runs": r + 1,
                "seconds": round(time.monotonic() - start, 3),
                "schedule": _schedule(result, points, target, pause_timeout),
            }
    return {"status": "not-confirmed", "reason": reason_of(points, results), "runs": runs,
            "seconds": round(time.monotonic() - start, 3),
            "timeouts": sum(r.timed_out for r in results)}


def _plan_points(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"held": p["held"], "wants": p["wants"], "at": p["at"]} for p in points]


def _schedule(result: RunResult, points: list[dict[str, Any]], target: Target,
              pause_timeout: float) -> dict[str, Any]:
    order = []
    for e in result.events:
        if e.get("event") == "pause":
            order.append({k: e.get(k) for k in ("thread", "point", "held", "wants", "at")})
        if e.get("event") == "cycle":
            order.append({"released_together": e.get("threads")})
            break
        if e.get("event", "").startswith("release-"):
            order.append({"released": e.get("thread"), "why": e["event"][8:]})
    return {"seed": result.seed, "points": _plan_points(points),
            "pause_timeout": pause_timeout, "order": order, "command": target.to_dict()}


def replay(schedule: dict[str, Any], runs: int, timeout: float, sites: frozenset[str],
           out: TextIO) -> int:
    """Re-run a confirmed schedule ``runs`` times; how many reproduced it."""
    target = Target.from_dict(schedule.get("command"))
    plan = {"seed": int(schedule.get("seed", 0)), "points": schedule.get("points", []),
            "pause_timeout": float(schedule.get("pause_timeout", DEFAULT_PAUSE))}
    ok = 0
    with tempfile.TemporaryDirectory(prefix="lockwise-replay-") as workdir:
        for r in range(runs):
            result = run_once(target, workdir, f"replay{r}", timeout, plan)
            hit = caught(result, sites) is not None
            ok += hit
            out.write(f"lockwise confirm: replay {r + 1}/{runs}: "
                      f"{'deadlock reproduced' if hit else 'not reproduced'}"
                      f"{' (timeout)' if result.timed_out else ''} ({result.elapsed:.2f}s)\n")
            out.flush()
    return ok


def collect(target: Target, workdir: str, timeout: float) -> list[dict[str, Any]]:
    result = run_once(target, workdir, "collect", timeout)
    if result.timed_out:
        raise ConfirmError(f"the collecting run exceeded --timeout {timeout:g}s; expected a "
                           "program that ends (raise --timeout, or give --from-report)")
    return result.findings


def replay_command(json_path: Optional[str], index: int) -> Optional[str]:
    if json_path is None:
        return None
    return f"lockwise confirm --replay {shlex.quote(json_path)} --finding {index}"


def write_json(path: str, doc: dict[str, Any]) -> None:
    atomic_write(path, lambda f: json.dump(doc, f, indent=1))


def status_line(conf: dict[str, Any], replay: Optional[str]) -> str:
    """One line: what ``lockwise confirm`` found for a finding."""
    if conf.get("status") == "confirmed":
        tail = f"; replay: {replay}" if replay else "; write it with --json FILE to replay it"
        return (f"CONFIRMED in run {conf.get('runs')} ({conf.get('seconds', 0):.1f}s): "
                f"{conf.get('reason', '')}{tail}")
    return f"not confirmed after {conf.get('runs')} run(s): {conf.get('reason', '')}"


def main_confirm(target: Optional[Target], runs: int, timeout: float,
                 json_path: Optional[str], from_report: Optional[str], seed: int,
                 pause_timeout: float, out: TextIO) -> int:
    """``lockwise confirm``: collect, steer each lock-order finding, report."""
    if target is None:
        raise ConfirmError("confirm: expected a script or -m module to run "
                           "(lockwise confirm [options] script.py [args])")
    with tempfile.TemporaryDirectory(prefix="lockwise-confirm-") as workdir:
        if from_report is not None:
            doc = _load(from_report, "--from-report")
        else:
            doc = {"findings": collect(target, workdir, timeout)}
        findings = [f for f in doc.get("findings", []) if isinstance(f, dict)]
        order = [f for f in findings if f.get("kind") == "lock-order"]
        if not order:
            out.write("lockwise confirm: no lock-order finding to confirm\n")
        confirmed = 0
        for k, finding in enumerate(order, 1):
            out.write(f"lockwise confirm: [{k}] {finding.get('summary', 'lock-order')}: "
                      "steering...\n")
            out.flush()
            conf = confirm_finding(target, finding, runs, timeout, workdir, f"f{k}",
                                   seed, pause_timeout)
            command = replay_command(json_path, k) if conf["status"] == "confirmed" else None
            if command is not None:
                conf["schedule"]["replay"] = command
            finding["confirmation"] = conf
            confirmed += conf["status"] == "confirmed"
            out.write(f"lockwise confirm: [{k}] {status_line(conf, command)}\n")
            out.flush()
        doc["findings"] = findings
        if json_path is not None:
            try:
                write_json(json_path, doc)
            except OSError as exc:
                raise ConfirmError(f"--json: cannot write {json_path!r}: "
                                   f"{exc.strerror or exc}; expected a writable path") from None
        out.write(f"lockwise confirm: {confirmed} of {len(order)} lock-order finding(s) "
                  "confirmed\n")
    return CONFIRMED_STATUS if confirmed else 0


def _load(path: str, option: str) -> dict[str, Any]:
    from . import _jsonreport

    try:
        data = _jsonreport.load_document(path)
    except _jsonreport.ReportError as exc:
        raise ConfirmError(f"{option}: {exc}") from None
    return dict(data)


def main_replay(path: str, finding: Optional[int], runs: int, timeout: float,
                out: TextIO) -> int:
    """``lockwise confirm --replay FILE [--finding K]``."""
    doc = _load(path, "--replay")
    order = [f for f in doc.get("findings", []) if isinstance(f, dict)
             and f.get("kind") == "lock-order"]
    if finding is None:
        chosen = [k for k, f in enumerate(order, 1)
                  if isinstance(f.get("confirmation"), dict)
                  and f["confirmation"].get("status") == "confirmed"]
        if not chosen:
            raise ConfirmError(f"--replay: {path!r} has no confirmed lock-order finding; "
                               "expected the --json FILE of a 'lockwise confirm' that "
                               "confirmed one")
        finding = chosen[0]
    if not 1 <= finding <= len(order):
        raise ConfirmError(f"--finding: {finding} is out of range; expected 1 to {len(order)} "
                           f"(the lock-order findings of {path!r})")
    conf = order[finding - 1].get("confirmation")
    schedule = conf.get("schedule") if isinstance(conf, dict) else None
    if not isinstance(schedule, dict):
        raise ConfirmError(f"--finding: finding {finding} of {path!r} has no schedule; "
                           "expected a confirmed finding")
    sites = cycle_sites(order[finding - 1])
    ok = replay(schedule, runs, timeout, sites, out)
    out.write(f"lockwise confirm: replay of finding {finding}: reproduced {ok}/{runs}\n")
    return CONFIRMED_STATUS if ok else 0
