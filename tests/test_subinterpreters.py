"""Subinterpreters: lockwise belongs to the main interpreter.

The C accelerator keeps process-wide references (set once by ``_accel``'s
``setup()``) to the objects of the interpreter that imported it. A
subinterpreter that imported lockwise used to rebind them to its own objects,
which die with it: the main interpreter's next lock then failed
(``threading._active`` is None) or the process aborted (``free(): invalid
pointer``, seen in CPython's ``SubinterpThreadingTests`` under ``lockwise run``).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from .runner_helpers import clean_env, python

pytest.importorskip("_testcapi")

MAIN = textwrap.dedent("""
    import sys, threading, _testcapi
    import lockwise
    from lockwise import _primitives
    lockwise.install()
    out = sys.argv[1]
    code = (
        "import threading, lockwise\\n"
        "from lockwise import _primitives\\n"
        "lock = lockwise.Lock()\\n"
        "with lock:\\n"
        "    pass\\n"
        f"open({out!r}, 'w').write(_primitives.IMPLEMENTATION)\\n"
    )
    assert _testcapi.run_in_subinterp(code) == 0
    lock = threading.Lock()
    with lock:
        pass
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    print("main ok", _primitives.IMPLEMENTATION, open(out).read())
""")


def test_subinterpreter_importing_lockwise_leaves_main_intact(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(MAIN)
    result = python("main.py", str(tmp_path / "sub.txt"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    assert words[:2] == ["main", "ok"]
    # The subinterpreter always runs the pure classes.
    assert words[3] == "pure"


ENV_MAIN = textwrap.dedent("""
    import sys, threading, _testcapi
    out = sys.argv[1]
    code = (
        "import sys, threading\\n"
        f"open({out!r}, 'w').write("
        "threading.Lock.__module__ + ' ' + str('lockwise' in sys.modules))\\n"
    )
    assert _testcapi.run_in_subinterp(code) == 0
    with threading.Lock():
        pass
    print(threading.Lock.__module__.split(".")[0], open(out).read())
""")


def test_env_activation_skips_subinterpreters(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(ENV_MAIN)
    result = python("main.py", str(tmp_path / "sub.txt"), cwd=tmp_path,
                    env=clean_env(LOCKWISE="1", LOCKWISE_QUIET="1"))
    assert result.returncode == 0, result.stderr
    main_module, sub_module, sub_imported = result.stdout.split()
    assert main_module == "lockwise"
    assert sub_module == "_thread"
    if sys.version_info >= (3, 12):
        # The .pth line checks the interpreter before importing anything.
        assert sub_imported == "False"
