"""Helpers for tests that run programs through ``lockwise run`` in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKWISE")}
    env.update(extra)
    return env


def lockwise(*args: str, cwd: Optional[Path] = None, timeout: float = 40,
             env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lockwise", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else clean_env())


def python(*args: str, cwd: Optional[Path] = None, timeout: float = 40,
           env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env if env is not None else clean_env())


def report(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    findings: list[dict[str, Any]] = data["findings"]
    return findings
