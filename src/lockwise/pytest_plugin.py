"""pytest plugin: ``pytest --lockwise`` runs the test session under lockwise.

Registered by the ``pytest11`` entry point and inert unless enabled with
``--lockwise`` or the ini option ``lockwise = true``; until then it does not
even import lockwise. When enabled:

* lockwise is installed for the whole session (``threading.Lock`` and
  friends, hence ``queue``, ``logging`` handlers, ``concurrent.futures``...
  created from then on are lockwise primitives);
* a test during which a finding of a ``--lockwise-fail-on`` kind
  (comma list, default ``deadlock``; ini ``lockwise_fail_on``) is recorded
  fails, with the report in its failure text. A finding is attributed to the
  test running when it is recorded (setup, call or teardown); one recorded
  by a background thread between tests goes to the next test.
* with ``--lockwise-profile`` (which implies ``--lockwise``), lock
  contention is profiled for the whole session (``lockwise.profile()``) and
  the contention table is printed in the terminal summary;
* with ``--lockwise-confirm`` (implies ``--lockwise``), each test during
  which a lock-order finding was recorded is re-run (``python -m pytest
  NODEID`` under ``lockwise run``, up to 3 times per finding) with the
  directed scheduler of ``lockwise confirm``; a confirmed deadlock fails the
  test with the command that replays it (a schedule file in a temporary
  directory);
* the ``lockwise_findings`` fixture gives a test the list of findings
  recorded during it so far (live: it grows as findings are recorded).
  Without ``--lockwise`` the fixture still collects the findings of
  lockwise's own primitives during that test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator, Optional

import pytest

if TYPE_CHECKING:
    from ._findings import Finding

_KEY = "lockwise_plugin"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lockwise", "deadlock detection with lockwise")
    group.addoption("--lockwise", action="store_true", default=None,
                    help="run the tests with lockwise installed (deadlocks raise "
                         "DeadlockError and fail the test)")
    group.addoption("--lockwise-fail-on", metavar="KINDS", default=None,
                    help="fail a test when a finding of these kinds (comma list of "
                         "deadlock, lock-order, hang, contention; default: deadlock) "
                         "is recorded during it")
    group.addoption("--lockwise-profile", action="store_true", default=None,
                    help="profile lock contention during the session (implies --lockwise) "
                         "and print the contention table at the end")
    group.addoption("--lockwise-confirm", action="store_true", default=None,
                    help="re-run each test that produced a lock-order finding under "
                         "lockwise confirm's directed scheduler (implies --lockwise); a "
                         "confirmed deadlock fails the test, with the replay command")
    parser.addini("lockwise", "run the tests with lockwise installed", type="bool",
                  default=False)
    parser.addini("lockwise_fail_on", "finding kinds that fail a test (comma list)",
                  default="deadlock")


class LockwisePlugin:
    """The enabled plugin: owns the install and the per-test findings."""

    def __init__(self, fail_on: frozenset[str], profile: bool = False,
                 confirm: Optional[str] = None) -> None:
        from . import _findings, _install, _profile

        self.fail_on = fail_on
        #: With --lockwise-confirm: the directory for the schedules (JSON).
        self.confirm_dir = confirm
        self.current: list[Finding] = []
        self._findings = _findings
        self._install = _install
        self.profiler: Optional[_profile.Profiler] = None
        _install.install()
        _install.predating_reported = True  # said in the terminal summary
        _findings.add_listener(self._on_finding, internal=True)  # a list append
        if profile:
            self.profiler = _profile.Profiler().start()

    def _on_finding(self, finding: Finding) -> None:
        self.current.append(finding)

    def close(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()
        self._findings.remove_listener(self._on_finding)
        self._findings.drain()  # logging and listeners get the last findings
        self._install.uninstall()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from ._report import watched_line
        from ._sites import watched_sites

        terminalreporter.write_line(watched_line(
            watched_sites(), "made after the plugin installed (before the first conftest.py)"))
        predating = self._install.predating_line()
        if predating is not None:
            terminalreporter.write_line(predating)
        if self.profiler is None:
            return
        self.profiler.stop()
        terminalreporter.write_sep("=", "lockwise profile")
        terminalreporter.write_line(self.profiler.table())

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.current = []
        self._checked = 0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        new = self.current[getattr(self, "_checked", 0):]
        self._checked = len(self.current)
        failing = [f for f in new if f.kind in self.fail_on]
        if self.confirm_dir is not None and call.when == "call":
            confirmed = self._confirm(item, [f for f in new if f.kind == "lock-order"])
            if confirmed:
                if report.passed:
                    report.outcome = "failed"
                    report.longrepr = confirmed
                else:
                    report.sections.append(("lockwise confirm", confirmed))
        if not failing:
            return
        from ._report import render

        text = "\n\n".join(render(f) for f in failing)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = (f"lockwise: {len(failing)} finding(s) of a failing kind "
                               f"({', '.join(sorted(self.fail_on))}) during this test:\n\n"
                               + text)
        else:
            report.sections.append(("lockwise findings", text))


    def _confirm(self, item: pytest.Item, found: list[Finding]) -> str:
        """Steer this test's lock-order findings (``lockwise confirm``) in
        ``python -m pytest NODEID`` subprocesses; the text of the confirmed ones."""
        if not found or self.confirm_dir is None:
            return ""
        import json
        import os

        from . import _confirm

        cwd = str(item.config.invocation_params.dir)
        target = _confirm.Target("pytest", ["-q", "-p", "no:cacheprovider", item.nodeid],
                                 True, cwd)
        safe = "".join(c if c.isalnum() else "_" for c in item.nodeid)[-80:]
        out = []
        try:
            for k, finding in enumerate(found, 1):
                data = finding.to_dict()
                conf = _confirm.confirm_finding(target, data, 3, 60.0, self.confirm_dir,
                                                f"{safe}-{k}")
                if conf["status"] != "confirmed":
                    continue
                path = os.path.join(self.confirm_dir, f"{safe}-{k}.json")
                conf["schedule"]["replay"] = _confirm.replay_command(path, 1)
                data["confirmation"] = conf
                with open(path, "w", encoding="utf-8") as f:
                    json.dump({"findings": [data]}, f, indent=1)
                out.append(f"lockwise confirm: {finding.summary}: CONFIRMED, a deadlock "
                           f"({conf['reason']})\n  replay: {conf['schedule']['replay']}")
        except Exception as exc:  # never breaks the session: say it
            out.append(f"lockwise confirm: internal error: {type(exc).__name__}: {exc}")
        return "\n\n".join(out)


def _enabled(config: pytest.Config, early: bool = False) -> bool:
    if early:  # before pytest_configure only the known arguments are parsed
        known = config.known_args_namespace
        profile, option = getattr(known, "lockwise_profile", None), getattr(known, "lockwise", None)
        confirm = getattr(known, "lockwise_confirm", None)
    else:
        profile, option = config.getoption("lockwise_profile"), config.getoption("lockwise")
        confirm = config.getoption("lockwise_confirm")
    if profile or confirm:
        return True
    if option is not None:
        return bool(option)
    return bool(config.getini("lockwise"))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]) -> None:
    """Install before the first conftest.py is imported: the locks of the
    libraries it imports are then lockwise's too (pytest_configure would come
    after them). The options are parsed already; a bad value is left for
    pytest_configure to report."""
    try:
        enabled = _enabled(early_config, early=True)
    except (ValueError, KeyError, AttributeError):
        return
    if enabled:
        try:
            _start(early_config, early=True)
        except pytest.UsageError:
            pass


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.get_plugin(_KEY) is not None or not _enabled(config):
        return
    _start(config)


def _start(config: pytest.Config, early: bool = False) -> None:
    from ._runner import UsageError, parse_kinds

    option = (getattr(config.known_args_namespace, "lockwise_fail_on", None) if early
              else config.getoption("lockwise_fail_on"))
    text = option or config.getini("lockwise_fail_on")
    try:
        fail_on = parse_kinds(str(text), "--lockwise-fail-on")
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    profile = bool(getattr(config.known_args_namespace, "lockwise_profile", None) if early
                   else config.getoption("lockwise_profile"))
    confirm: Optional[str] = None
    if (getattr(config.known_args_namespace, "lockwise_confirm", None) if early
            else config.getoption("lockwise_confirm")):
        import tempfile

        confirm = tempfile.mkdtemp(prefix="lockwise-confirm-")
    config.pluginmanager.register(LockwisePlugin(fail_on, profile, confirm), _KEY)


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin: Optional[LockwisePlugin] = config.pluginmanager.get_plugin(_KEY)
    if plugin is not None:
        plugin.close()
        config.pluginmanager.unregister(plugin, _KEY)


def pytest_report_header(config: pytest.Config) -> Optional[str]:
    plugin: Optional[LockwisePlugin] = config.pluginmanager.get_plugin(_KEY)
    if plugin is None:
        return None
    profiling = "; profiling contention" if plugin.profiler is not None else ""
    return (f"lockwise: installed; failing tests on "
            f"{', '.join(sorted(plugin.fail_on)) or 'none'}{profiling}")


@pytest.fixture
def lockwise_findings(request: pytest.FixtureRequest) -> Generator[list[Finding], None, None]:
    """The findings recorded during this test (a live list, oldest first)."""
    plugin: Optional[LockwisePlugin] = request.config.pluginmanager.get_plugin(_KEY)
    if plugin is not None:
        yield plugin.current
        return
    from . import _findings

    collected: list[Finding] = []
    _findings.add_listener(collected.append, internal=True)
    try:
        yield collected
    finally:
        _findings.remove_listener(collected.append)
