"""Build hook: ship ``lockwise-activate.pth`` so that ``LOCKWISE=1 python app.py`` works.

The metadata lives in pyproject.toml. The .pth file goes to the root of the
wheel (site-packages) for both a normal install (``build_lib``) and an
editable one (PEP 660: setuptools points the ``install`` command's
``install_lib`` at the editable wheel's root). It imports nothing unless the
``LOCKWISE`` environment variable is set to something other than 0/false/no/off.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "lockwise-activate.pth"
PTH_LINE = (
    "import os; "
    "os.environ.get('LOCKWISE', '').strip().lower() not in ('', '0', 'false', 'no', 'off') "
    "and __import__('lockwise._runner')._runner.boot()\n"
)


class build_py_with_pth(build_py):
    """build_py that also writes the activation .pth at the wheel's root."""

    def run(self):
        super().run()
        target = self.build_lib
        if getattr(self, "editable_mode", False):
            target = self.get_finalized_command("install").install_lib
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, PTH_NAME), "w", encoding="utf-8") as f:
            f.write(PTH_LINE)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH_NAME))
        return outputs


setup(cmdclass={"build_py": build_py_with_pth})
