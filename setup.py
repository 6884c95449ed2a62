"""Build hook for lockwise's optional C accelerator (``lockwise._speedups``).

All metadata lives in pyproject.toml; this file only declares the extension.
The extension is optional: when there is no compiler, no Python headers, or
the compile fails for any reason, the build prints a warning and lockwise is
installed without it (the pure-Python implementation is complete).
Set ``LOCKWISE_NO_EXTENSION=1`` to skip the build on purpose.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

WARNING = """
**********************************************************************
lockwise: the optional C accelerator could not be built ({reason}).
lockwise is installed in pure Python: it works the same, only slower.
**********************************************************************
"""


class OptionalBuildExt(build_ext):
    """A build_ext whose failures are reported, never fatal."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, platform errors...
            self._warn(exc)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, missing headers...
            self._warn(exc)

    @staticmethod
    def _warn(exc: BaseException) -> None:
        sys.stderr.write(WARNING.format(reason=f"{type(exc).__name__}: {exc}"))


ext_modules = []
if os.environ.get("LOCKWISE_NO_EXTENSION") != "1" and sys.implementation.name == "cpython":
    ext_modules.append(Extension("lockwise._speedups", ["src/lockwise/_speedups.c"]))

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
