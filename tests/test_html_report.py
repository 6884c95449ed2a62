"""``lockwise report --html``: the page, checked as rendered by headless chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Optional

import pytest

from lockwise import _html, _jsonreport

from .runner_helpers import EXAMPLES, lockwise

EVIL = "<script>alert(1)</script>"
EVIL2 = '<img src=x onerror="alert(2)">'


class Element:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.text = ""

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class DomParser(HTMLParser):
    """Every element with its attributes and its text (all descendants')."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(el)
        if tag not in ("meta", "br", "input", "link", "img"):
            self._open.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        self.text += data
        for el in self._open:
            el.text += data

    def find(self, tag: str, cls: Optional[str] = None) -> list[Element]:
        return [e for e in self.elements
                if e.tag == tag and (cls is None or cls in e.classes)]


def parse(html: str) -> DomParser:
    p = DomParser()
    p.feed(html)
    p.close()
    return p


def _chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def rendered_dom(page: Path) -> str:
    """The DOM of ``page`` after headless chromium loaded and rendered it."""
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    with tempfile.TemporaryDirectory(prefix="lockwise-chromium-") as profile:
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


def _bank_report(tmp_path: Path) -> Path:
    out = tmp_path / "run.json"
    run = lockwise("run", "--profile", "--json", str(out), str(EXAMPLES / "bank_transfer.py"),
                   cwd=tmp_path)
    assert run.returncode == 3, run.stderr
    page = tmp_path / "report.html"
    made = lockwise("report", str(out), "--html", str(page))
    assert made.returncode == 0, made.stderr
    assert made.stdout == "" and "HTML report written" in made.stderr
    return page


def test_bank_transfer_report_in_browser(tmp_path: Path) -> None:
    page = _bank_report(tmp_path)
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html and "<script" not in html  # self-contained, no script
    dom = parse(rendered_dom(page))
    # The findings, with their stacks.
    kinds = {c for a in dom.find("article", "finding") for c in a.classes if c.startswith("kind-")}
    assert kinds == {"kind-deadlock", "kind-lock-order"}
    deadlock = dom.find("article", "kind-deadlock")[0]
    # Which teller finds the cycle (and is named first) depends on the schedule.
    assert re.search(r"teller-(1, teller-2|2, teller-1) wait for each other in a cycle",
                     deadlock.text)
    assert "with destination.lock:" in deadlock.text  # a stack line
    # The lock-order graph: both accounts drawn, on the highlighted cycle.
    nodes = {g.attrs["data-name"]: g for g in dom.find("g", "node")}
    cycle_nodes = {name for name, g in nodes.items() if "cycle" in g.classes}
    assert cycle_nodes == {"Account.lock#1", "Account.lock#2"}
    assert cycle_nodes <= {t.text for t in dom.find("text")}  # drawn labels
    cycle_edges = {(p.attrs["data-from"], p.attrs["data-to"]) for p in dom.find("path", "cycle")}
    assert cycle_edges == {("Account.lock#1", "Account.lock#2"),
                           ("Account.lock#2", "Account.lock#1")}
    # The contention table: the account lock's row first, with its waits.
    rows = dom.find("tr", "lock-row")
    assert rows and rows[0].attrs["data-lock"] == "Account.lock"
    assert "Account.lock" in rows[0].text and "ms" in rows[0].text
    assert "transfer" in " ".join(r.text for r in dom.find("tr", "sites"))
    # The timeline of the busiest lock, one lane per teller.
    [timeline] = [s for s in dom.find("svg", "timeline") if s.attrs["data-lock"] == "Account.lock"]
    assert "teller-1" in timeline.text and "teller-2" in timeline.text


EVIL_PROGRAM = f'''
import threading, time
import lockwise

a = lockwise.Lock(name={EVIL!r})
b = lockwise.Lock(name={EVIL2!r})
ready = threading.Event()
with a:
    with b:
        pass

def holder():
    with b:
        ready.set()
        time.sleep(0.05)

t = threading.Thread(target=holder, name={EVIL!r})
t.start()
ready.wait(10)
with b:
    with a:
        pass
t.join(10)
'''


def test_user_text_is_escaped_in_browser(tmp_path: Path) -> None:
    prog = tmp_path / "evil.py"
    prog.write_text(EVIL_PROGRAM)
    out = tmp_path / "run.json"
    run = lockwise("run", "--profile", "--json", str(out), str(prog), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    page = tmp_path / "evil.html"
    assert lockwise("report", str(out), "--html", str(page)).returncode == 0
    source = page.read_text()
    assert EVIL not in source and "<img" not in source
    dom_text = rendered_dom(page)
    dom = parse(dom_text)
    assert not dom.find("script") and not dom.find("img")
    # The names show as text: in the finding, the graph and the table.
    assert EVIL in dom.find("article", "kind-lock-order")[0].text
    assert {EVIL, EVIL2} <= {g.attrs["data-name"] for g in dom.find("g", "node")}
    assert {EVIL, EVIL2} <= {t.text for t in dom.find("text")}  # drawn labels
    assert EVIL2 in {r.attrs["data-lock"] for r in dom.find("tr", "lock-row")}
    assert EVIL in dom.find("svg", "timeline")[0].text  # the thread's name


def test_escaping_without_browser(tmp_path: Path) -> None:
    data = {"format": 1, "findings": [{
        "kind": "lock-order", "summary": f"inversion {EVIL}", "threads": [EVIL],
        "locks": [{"name": EVIL, "site": f"{EVIL}:1"}, {"name": "b", "site": "x:2"}],
        "stacks": [{"thread": EVIL, "title": EVIL2,
                    "frames": [{"file": EVIL, "line": 1, "function": EVIL, "code": EVIL2}]}],
        "details": {"cycle": [
            {"thread": EVIL, "from": {"name": EVIL, "site": "s"}, "to": {"name": "b", "site": "t"},
             "first_stack": [], "second_stack": []},
            {"thread": "x", "from": {"name": "b", "site": "t"}, "to": {"name": EVIL, "site": "s"},
             "first_stack": [], "second_stack": []}]},
    }]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    doc = _jsonreport.load_document(str(path))
    page = _html.render_page(doc, _jsonreport.findings_of(doc), source="r.json")
    assert EVIL not in page and EVIL2 not in page
    dom = parse(page)
    assert not dom.find("script") and not dom.find("img")
    assert {p.attrs["data-from"] for p in dom.find("path", "cycle")} == {EVIL, "b"}
    assert EVIL2 in dom.text and EVIL in dom.find("article", "finding")[0].text
    assert "This run was not profiled" in dom.text


def test_graph_layout_cycles_and_cap() -> None:
    g = _html._Graph()
    for i in range(_html.MAX_NODES + 10):
        g.edge(g.node(f"n{i}"), g.node(f"n{i + 1}"), "order")
    g.edge(g.node("x"), g.node("y"), "order")
    g.edge(g.node("y"), g.node("x"), "order")
    g.edge(g.node("s"), g.node("s"), "order")
    assert g.cycle_edges() == {("x", "y"), ("y", "x"), ("s", "s")}
    svg = _html.render_graph(g)
    dom = parse(svg)
    names = {e.attrs["data-name"] for e in dom.find("g", "node")}
    assert len(names) == _html.MAX_NODES and {"x", "y", "s"} <= names
    assert "more lock(s) not drawn" in svg


def test_large_order_graph_renders_in_near_linear_time() -> None:
    """8,000 locks on cycles: finding the cycle edges was O(edges x nodes)
    (11.6 s here before; well under a second now). The drawing stays capped."""
    import time

    n = 8000
    data = {"findings": [], "order_graph": {
        "nodes": [{"name": f"L{i}", "site": "x.py:1"} for i in range(n)],
        "edges": [{"from_name": f"L{i}", "to_name": f"L{(i + 1) % n}"} for i in range(n)]
        + [{"from_name": f"L{i}", "to_name": f"L{(i * 7) % n}"} for i in range(n)]}}
    start = time.monotonic()
    page = _html.render_page(data, [])
    assert time.monotonic() - start < 4
    assert f"{n - _html.MAX_NODES} more lock(s) not drawn" in page
