"""Other local users: what lockwise refuses to trust (issue 14, section 1).

Most tests make the hostile situation with directories and files they create
(bad modes, symlinks, another owner: root can chown to ``nobody``). Those
marked ``second_user`` run a step as another local user, in a forked child
that calls ``os.setuid``; they need root (as CI runs) and skip otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

from lockwise import _html, _jsonreport


def test_html_writer_does_not_follow_a_planted_temporary_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "report.html"
    # The names the old writer used: path.tmpPID, predictable by anyone.
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        os.symlink(victim, f"{out}.tmp{pid}")
    data = _jsonreport.document([])
    _html.write(str(out), data, [])
    assert victim.read_text() == "precious\n"
    assert out.read_text().startswith("<!DOCTYPE html>")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".report.html")]
    assert leftovers == []
