"""The repository explains itself: the generated parts of docs/ match the code, every link of README.md and
docs/ resolves inside the repository, nothing points at files a clone does not have, and what the code
can emit (exit codes, wiring findings, reason codes, ports) is written down."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from common.config import DEFAULT_CONFIG_DIR, REPO_ROOT
from common.contracts.reasons import IntentRefusal, PlanReason
from ops import docs

OPERATIONS = REPO_ROOT / "docs" / "operations.md"
README = REPO_ROOT / "README.md"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# --- (a) generated parts --------------------------------------------------------------------------


def test_generated_parts_match_the_code() -> None:
    out_of_date = docs.stale()
    assert not out_of_date, f"out of date: {', '.join(out_of_date)}: run `{docs.REGENERATE}` and commit the result"


def test_every_block_has_its_markers_once() -> None:
    for block in docs.BLOCKS:
        text = _text(REPO_ROOT / block.path)
        begin, end = docs.markers(block.name)
        assert text.count(begin) == 1 and text.count(end) == 1, f"{block.path}: markers of {block.name}"


def test_a_stale_block_is_found(tmp_path: Path) -> None:
    """stale() compares the text between the markers with what the code renders."""
    for block in docs.BLOCKS:
        target = tmp_path / block.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_text(REPO_ROOT / block.path), encoding="utf-8")
    assert docs.stale(tmp_path) == []
    wiring = tmp_path / "docs" / "wiring.md"
    wiring.write_text(_text(wiring).replace("| `trade.intent` |", "| `trade.intent.old` |", 1), encoding="utf-8")
    assert docs.stale(tmp_path) == ["docs/wiring.md#wiring"]
    assert docs.write(tmp_path) == ["docs/wiring.md#wiring"]
    assert docs.stale(tmp_path) == []


def test_the_command_table_lists_every_qt_command() -> None:
    table = docs.command_table()
    for command in ("`qt status`", "`qt wiring`", "`qt close SYMBOL`", "`qt ess trip`", "`qt ess reset`",
                    "`qt streams`", "`qt streams init`", "`qt install`", "`qt redis-acl`", "`qt train`"):
        assert f"| {command} |" in table
    assert "`--max-lag` (1000)" in table and "`--prefix` (required)" in table
    assert str(REPO_ROOT) not in table  # no machine-specific path


# --- (b) links ------------------------------------------------------------------------------------


def test_every_relative_link_resolves() -> None:
    assert [p.relative_to(REPO_ROOT).as_posix() for p in docs.pages()][:1] == ["README.md"]
    assert len(docs.pages()) >= 7  # README and the six pages of docs/
    broken = docs.broken_links()
    assert not broken, "links that do not resolve:\n" + "\n".join(broken)


@pytest.mark.parametrize(("heading", "anchor"), [
    ("The bus runtime (`common/bus/`)", "the-bus-runtime-commonbus"),
    ("exitbrain's decisions", "exitbrains-decisions"),
    ("Exits (`FULL_CLOSE_PROPOSED`, `PARTIAL_CLOSE_PROPOSED`)", "exits-full_close_proposed-partial_close_proposed"),
    ("qt wiring and qt status", "qt-wiring-and-qt-status"),
    ("Credentials: which drop-in a deployment needs", "credentials-which-drop-in-a-deployment-needs"),
    ("币安人生 — 1.2 %", "币安人生--12-"),
    ("A [link](other.md) in a heading", "a-link-in-a-heading"),
])
def test_github_anchor(heading: str, anchor: str) -> None:
    assert docs.github_anchor(heading) == anchor


def test_the_link_checker_says_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n", encoding="utf-8")
    (tmp_path / "docs" / "b.md").write_text("# B\n\n## Same\n\n## Same\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "# Top\n\n"
        "[ok](docs/b.md) [ok](docs/b.md#same) [ok](docs/b.md#same-1) [ok](#top) [ok](src/) [ok](src/code.py)\n"
        "[web](https://example.com/x.md) [mail](mailto:a@b.c) `[not a link](gone.md)`\n\n"
        "```\n[nor this](gone.md)\n```\n\n"
        "[missing](docs/gone.md) [anchor](docs/b.md#nope) [repeat](docs/b.md#same-2) [here](#nowhere)\n"
        "[outside](../elsewhere.md) [code anchor](src/code.py#x)\n\n"
        "[ref]: docs/also-gone.md\n",
        encoding="utf-8")
    assert docs.broken_links(tmp_path) == [
        "README.md: docs/gone.md: no such file in the repository",
        "README.md: docs/b.md#nope: no heading with the anchor #nope in docs/b.md",
        "README.md: docs/b.md#same-2: no heading with the anchor #same-2 in docs/b.md",
        "README.md: #nowhere: no heading with the anchor #nowhere in README.md",
        "README.md: ../elsewhere.md: points outside the repository",
        "README.md: src/code.py#x: an anchor into a file that is not Markdown",
        "README.md: docs/also-gone.md: no such file in the repository",
    ]


# --- (c) nothing outside the repository -----------------------------------------------------------


#: a relative path written anywhere in a page (a link, a code span, prose)
RELATIVE_PATH = re.compile(r"(?:\.\./)+[\w.-][\w./-]*")


@pytest.mark.parametrize("page", docs.pages(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_no_page_points_outside_the_repository(page: Path) -> None:
    """Links are checked above; this catches paths in prose and code spans too: a clone has only itself."""
    outside = [path for path in RELATIVE_PATH.findall(_text(page))
               if not (page.parent / path).resolve().is_relative_to(REPO_ROOT.resolve())]
    assert outside == [], f"{page.name} points at files a clone does not have: {outside}"


# --- what the code emits is written down ----------------------------------------------------------


def _exit_codes_in_code() -> set[int]:
    """Every exit code the services and the qt commands use: literal SystemExit/typer.Exit codes, the named
    constants (EX_*, EXIT_*), 0, and click's 2 for a usage error."""
    codes = {0, 2}
    for path in [*(REPO_ROOT / "common").rglob("*.py"), *(REPO_ROOT / "ops").rglob("*.py"),
                 *(REPO_ROOT / "services").rglob("*.py")]:
        text = _text(path)
        codes |= {int(c) for c in re.findall(r"(?:SystemExit|typer\.Exit)\((\d+)\)", text)}
        codes |= {int(c) for c in re.findall(r"^(?:EX|EXIT)_[A-Z_]+(?::\s*\w+)?\s*=\s*(\d+)\b", text, re.M)}
    return codes


def _documented(text: str, heading: str, pattern: str) -> set[int]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return {int(c) for c in re.findall(pattern, section, re.M)}


def test_every_exit_code_is_documented() -> None:
    used = _exit_codes_in_code()
    assert {0, 1, 2, 65, 69, 78} <= used
    assert used <= _documented(_text(OPERATIONS), "## Exit codes", r"^\| `(\d+)` \|")
    assert used <= _documented(_text(README), "## Exit codes", r"^\| (\d+) \|")


def test_every_wiring_finding_is_documented() -> None:
    kinds = set(re.findall(r'Finding\("([A-Z_]+)"', _text(REPO_ROOT / "ops" / "wiring.py")))
    assert "CONSUMED_NOT_PRODUCED" in kinds
    text = _text(OPERATIONS)
    assert sorted(k for k in kinds if f"| `{k}` |" not in text) == []


def test_every_reason_code_is_documented() -> None:
    text = _text(REPO_ROOT / "docs" / "contracts.md")
    missing = [r.value for r in (*PlanReason, *IntentRefusal) if f"`{r.value}`" not in text]
    assert missing == []


def test_the_ports_are_documented() -> None:
    data = tomllib.loads(_text(DEFAULT_CONFIG_DIR / "default.toml"))
    ports = {**data["runtime"]["metrics_ports"], **data["http"]["ports"]}
    assert len(ports) == 10
    readme, operations = _text(README), _text(OPERATIONS)
    assert sorted(s for s, port in ports.items() if f"{s} {port}" not in readme) == []
    assert sorted(s for s, port in ports.items() if not re.search(rf"^\| {s} \| {port}\b", operations, re.M)) == []
