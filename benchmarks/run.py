"""Run every benchmark and regenerate benchmarks/RESULTS.md.

Usage (from the repository root, with lockwise installed)::

    python benchmarks/run.py            # full run (about ten minutes)
    python benchmarks/run.py --quick    # smaller sizes and fewer rounds
    python benchmarks/run.py --only core --ft only   # bench_core on 3.13t alone

Each ``benchmarks/bench_*.py`` module defines ``run(quick: bool) -> list[dict]``;
each dict is one row with the keys ``name``, ``baseline`` (seconds per
operation), ``lockwise`` (seconds per operation), ``ratio``, and optionally
``target`` (e.g. ``"<= 1.5x"``), ``met`` (bool) and ``note``. A module that
fails to import or raises is reported as a row carrying the error; the other
modules still run. Only ``--only NAME`` (a module name without ``bench_``)
restricts the run.

Free-threaded section: when a free-threaded interpreter is found (``--ft-python``,
else ``$LOCKWISE_FT_PYTHON``, else ``/opt/python3.13t/bin/python3.13t``, else
``python3.13t`` on PATH) and the interpreter running this script is not one,
the modules of ``FT_MODULES`` (those selected by ``--only``) also run under it,
in a subprocess with ``PYTHON_GIL=0`` that imports the same lockwise as this
process, and RESULTS.md gets a "free-threaded" section for each. ``--ft no``
skips it; ``--ft only`` runs nothing else (a partial run: write it elsewhere
with ``--output``). ``LOCKWISE_FT_PYTHON=none`` disables the search.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

#: Modules run again on the free-threaded interpreter: the lock hot path,
#: contention and scaling (bench_core), and a whole threaded program
#: (bench_program). The asyncio, Redis and many-waiters modules measure
#: nothing that the GIL changes.
FT_MODULES = ("core", "program")

#: Where a free-threaded CPython is looked for (after --ft-python and
#: $LOCKWISE_FT_PYTHON): the prefix of ../shared/tools/python-ft.sh, then PATH.
FT_CANDIDATES = ("/opt/python3.13t/bin/python3.13t",)

#: Seconds the free-threaded subprocess may take before it is killed.
FT_LIMIT = 3600

Section = tuple[str, list[dict[str, Any]], float]


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"lockwise_bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(HERE))
    return module


def _error_row(module: str, exc: BaseException) -> dict[str, Any]:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return {"name": f"{module}: error", "baseline": None, "lockwise": None, "ratio": None,
            "note": f"benchmark failed: {last}", "error": True}


def _fmt_time(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "" if seconds is None else str(seconds)
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def _fmt_value(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    unit = row.get("unit")
    if unit and isinstance(value, (int, float)):
        return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:.3g} {unit}"
    return _fmt_time(value)


def _fmt_ratio(ratio: Any) -> str:
    if isinstance(ratio, (int, float)):
        return f"{ratio:.2f}x"
    return "" if ratio is None else str(ratio)


def _met(row: dict[str, Any]) -> str:
    if row.get("error"):
        return "error"
    met = row.get("met")
    if met is None:
        return ""
    return "yes" if met else "**no**"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _is_free_threaded() -> bool:
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def _gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def find_ft_python(explicit: str | None = None) -> str | None:
    """The free-threaded interpreter to run the FT section with, or None."""
    for choice in (explicit, os.environ.get("LOCKWISE_FT_PYTHON")):
        if choice is not None:
            if choice.lower() in ("", "none", "no", "0"):
                return None
            return shutil.which(choice) or choice
    for path in FT_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("python3.13t")


def _ft_env() -> dict[str, str]:
    """The environment of the free-threaded subprocess: the GIL off, and the
    lockwise this process imported first on the path (the same code measured
    in both sections, not whatever the other interpreter has installed)."""
    env = dict(os.environ, PYTHON_GIL="0")
    env.pop("LOCKWISE_PURE", None)
    try:
        import lockwise

        root = str(Path(lockwise.__file__).resolve().parent.parent)
    except Exception:  # pragma: no cover - reported by the child
        root = ""
    if root:
        env["PYTHONPATH"] = os.pathsep.join(
            [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_ft(python: str, modules: list[str], quick: bool) -> dict[str, Any]:
    """Run ``modules`` under the free-threaded ``python`` (PYTHON_GIL=0) and
    return what its child run reported (see --child-json), or an error."""
    fd, out = tempfile.mkstemp(prefix="lockwise-ft-", suffix=".json")
    os.close(fd)
    cmd = [python, str(Path(__file__).resolve()), "--child-json", out, "--ft", "no"]
    cmd += ["--quick"] if quick else []
    for name in modules:
        cmd += ["--only", name]
    print(f"== free-threaded: {' '.join(cmd)} (PYTHON_GIL=0)", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=_ft_env(), timeout=FT_LIMIT)
        text = Path(out).read_text(encoding="utf-8") if os.path.getsize(out) else ""
        if proc.returncode != 0 or not text:
            raise RuntimeError(f"{python} exited with status {proc.returncode}"
                               + ("" if text else " and wrote no results"))
        return dict(json.loads(text))
    except Exception as exc:  # noqa: BLE001 - the GIL build's sections still get written
        return {"python": python, "error": True,
                "sections": [("ft", [_error_row("free-threaded run", exc)],
                              time.perf_counter() - start)]}
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass


def _interpreter() -> dict[str, Any]:
    impl = "unknown"
    try:
        from lockwise import _primitives

        impl = _primitives.IMPLEMENTATION
    except Exception:  # pragma: no cover - reported, not fatal
        pass
    return {"python": f"{platform.python_implementation()} {platform.python_version()}",
            "executable": sys.executable, "free_threaded": _is_free_threaded(),
            "gil_enabled": _gil_enabled(), "impl": impl,
            "abiflags": getattr(sys, "abiflags", "")}


def _table(lines: list[str], title: str, rows: list[dict[str, Any]],
           missed: list[tuple[str, dict[str, Any]]], prefix: str = "") -> None:
    lines += [title, "",
              "| benchmark | baseline | lockwise | ratio | target | met | note |",
              "| --- | ---: | ---: | ---: | --- | --- | --- |"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(c) for c in (
            row.get("name", "?"), _fmt_value(row, "baseline"), _fmt_value(row, "lockwise"),
            _fmt_ratio(row.get("ratio")), row.get("target", ""), _met(row),
            row.get("note", ""))) + " |")
        if row.get("met") is False or row.get("error"):
            missed.append((prefix, row))
    lines.append("")


def render(sections: list[Section], command: str,
           ft: dict[str, Any] | None = None) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    impl = _interpreter()["impl"]
    lines = [
        "# lockwise benchmarks",
        "",
        "Generated by the command below; do not edit by hand.",
        "",
        f"- command: `{command}`",
        f"- date: {now}",
        f"- Python: {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        f"- machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs "
        f"({platform.processor() or 'processor unknown'})",
        f"- lockwise implementation selected by default here: `{impl}` "
        "(rows say `[pure]` or `[c]` when they measure one explicitly)",
        "- `baseline` is `threading` (or plain `python`), `lockwise` is lockwise with "
        "detection fully on, both per operation, medians of interleaved rounds in one "
        "process; `ratio` is the median of the per-round ratios.",
        "",
    ]
    missed: list[tuple[str, dict[str, Any]]] = []
    for module, rows, elapsed in sections:
        _table(lines, f"## {module} ({elapsed:.1f} s)", rows, missed)
    if ft is not None:
        label = "free-threaded " + str(ft.get("version", "3.13t"))
        lines += [f"## {label}", "",
                  "The same benchmarks on the free-threaded build, the GIL off, against "
                  "`threading` on that build (run by the command above, in a subprocess).", "",
                  f"- Python: {ft.get('python', '?')} ({ft.get('executable', '?')}), "
                  f"`PYTHON_GIL=0`",
                  f"- `sys._is_gil_enabled()` after importing lockwise: "
                  f"`{ft.get('gil_enabled', '?')}`",
                  f"- lockwise implementation selected by default there: "
                  f"`{ft.get('impl', '?')}`", ""]
        for module, rows, elapsed in ft.get("sections", []):
            _table(lines, f"### {label}: {module} ({elapsed:.1f} s)", rows, missed,
                   prefix=f"{label}: ")
    lines += ["## Targets missed", ""]
    if not missed:
        lines.append("None.")
    for prefix, row in missed:
        ratio = row.get("ratio")
        by = ""
        target = str(row.get("target", ""))
        if isinstance(ratio, (int, float)) and "x" in target:
            try:
                limit = float(target.split()[-1].rstrip("x"))
                by = f" (by {ratio / limit - 1:.0%}: {ratio:.2f}x for {target})"
            except ValueError:
                pass
        why = row.get("why") or row.get("note") or "no reason recorded"
        lines.append(f"- **{prefix}{row.get('name')}**{by}: {why}")
    lines.append("")
    return "\n".join(lines)


def _run_modules(names: list[str], quick: bool) -> list[Section]:
    sections: list[Section] = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem[len("bench_"):]
        if name not in names:
            continue
        print(f"== {path.name}", flush=True)
        start = time.perf_counter()
        try:
            rows = list(_load(path).run(quick))
        except BaseException as exc:  # noqa: BLE001 - one module must not stop the others
            if isinstance(exc, KeyboardInterrupt):
                raise
            traceback.print_exc()
            rows = [_error_row(path.stem, exc)]
        elapsed = time.perf_counter() - start
        for row in rows:
            print(f"  {row.get('name', '?'):60s} {_fmt_value(row, 'baseline'):>10s} "
                  f"{_fmt_value(row, 'lockwise'):>10s} {_fmt_ratio(row.get('ratio')):>8s} "
                  f"{_met(row):6s} {row.get('note', '')}", flush=True)
        sections.append((path.stem, rows, elapsed))
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--only", action="append", default=[],
                        help="run only this module (e.g. core); repeatable")
    parser.add_argument("--output", default=str(RESULTS), help="where to write the results")
    parser.add_argument("--ft", choices=("auto", "no", "only"), default="auto",
                        help="the free-threaded section: run it when an interpreter is found "
                             "(auto, the default), never (no), or alone (only)")
    parser.add_argument("--ft-python", default=None, metavar="PATH",
                        help="the free-threaded interpreter (default: $LOCKWISE_FT_PYTHON, "
                             f"{', '.join(FT_CANDIDATES)}, python3.13t on PATH)")
    parser.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    known = sorted(path.stem[len("bench_"):] for path in HERE.glob("bench_*.py"))
    unknown = [name for name in args.only if name not in known]
    if unknown:
        parser.error(f"--only {unknown[0]}: no such benchmark module; expected one of "
                     f"{', '.join(known)}")
    selected = [name for name in known if not args.only or name in args.only]

    if args.child_json:  # the free-threaded subprocess of run_ft: rows as JSON
        info = _interpreter()
        info["version"] = f"{sys.version_info[0]}.{sys.version_info[1]}{info['abiflags']}"
        info["sections"] = _run_modules(selected, args.quick)
        Path(args.child_json).write_text(json.dumps(info), encoding="utf-8")
        return 0

    ft_python = None
    if args.ft != "no" and not _is_free_threaded():
        ft_python = find_ft_python(args.ft_python)
        if ft_python is None and args.ft == "only":
            parser.error("--ft only: no free-threaded interpreter found (--ft-python PATH)")
    ft_modules = [name for name in selected if name in FT_MODULES]
    if args.ft == "only" and not ft_modules:
        parser.error("--ft only: none of the selected modules runs there "
                     f"({', '.join(FT_MODULES)})")

    command = "python benchmarks/run.py" + (" --quick" if args.quick else "") + "".join(
        f" --only {name}" for name in args.only) + (f" --ft {args.ft}" if args.ft != "auto"
                                                    else "")
    sections = [] if args.ft == "only" else _run_modules(selected, args.quick)
    ft = None
    if ft_python is not None and ft_modules:
        ft = run_ft(ft_python, ft_modules, args.quick)
    elif args.ft == "auto" and not _is_free_threaded():
        print("== no free-threaded interpreter found: no free-threaded section", flush=True)
    text = render(sections, command, ft)
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
