"""Build hooks; all metadata lives in pyproject.toml.

1. ``lockwise-activate.pth`` goes to the root of the wheel (site-packages) so
   that ``LOCKWISE=1 python app.py`` works, for a normal install
   (``build_lib``) and an editable one (PEP 660: setuptools points the
   ``install`` command's ``install_lib`` at the editable wheel's root). It
   imports nothing unless ``LOCKWISE`` is set to something other than
   0/false/no/off, nor in a subinterpreter on 3.12+ (older versions import
   lockwise there, in pure Python, and ``boot()`` skips the activation).
2. The optional C accelerator ``lockwise._speedups``: when there is no
   compiler, no Python headers, or the compile fails for any reason, the
   build prints a warning and lockwise is installed in pure Python (complete,
   only slower). ``LOCKWISE_NO_EXTENSION=1`` skips it on purpose.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

PTH_NAME = "lockwise-activate.pth"
PTH_LINE = (
    "import os; "
    "os.environ.get('LOCKWISE', '').strip().lower() not in ('', '0', 'false', 'no', 'off') "
    "and getattr(__import__('_thread'), '_is_main_interpreter', lambda: True)() "
    "and __import__('lockwise._runner')._runner.boot()\n"
)

WARNING = """
**********************************************************************
lockwise: the optional C accelerator could not be built ({reason}).
lockwise is installed in pure Python: it works the same, only slower.
**********************************************************************
"""


class BuildPyWithPth(build_py):
    """build_py that also writes the activation .pth at the wheel's root."""

    def run(self) -> None:
        super().run()
        target = self.build_lib
        if getattr(self, "editable_mode", False):
            target = self.get_finalized_command("install").install_lib
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, PTH_NAME), "w", encoding="utf-8") as f:
            f.write(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH_NAME))
        return outputs


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

setup(ext_modules=ext_modules,
      cmdclass={"build_py": BuildPyWithPth, "build_ext": OptionalBuildExt})
