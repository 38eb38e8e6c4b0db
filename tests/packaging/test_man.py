"""The man pages: valid roff, and rtpproxy(8) documents exactly the options of the usage text."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAN = REPO / "man"
PAGES = ("rtpproxy.8", "makeann.1", "extractaudio.1", "rtpproxy-top.1")
CLI = REPO / "lib" / "rtpp" / "cli.py"
REQUIRED_SECTIONS = (
    "NAME",
    "SYNOPSIS",
    "DESCRIPTION",
    "OPTIONS",
    "CONTROL PROTOCOL",
    "TIMEOUT NOTIFICATIONS",
    "RECORDING",
    "FILES",
    "SIGNALS",
    "SECURITY",
    "DIAGNOSTICS",
    "EXAMPLES",
    "SCALING OUT",
    "DIFFERENCES FROM THE CLASSIC IMPLEMENTATION",
    "SEE ALSO",
)
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z0-9?][\w-]*)")


def need_tool(command: str) -> str:
    """Path of `command`, installing the packaging test tools first if it is missing."""
    path = shutil.which(command)
    if path is None and os.geteuid() == 0:
        subprocess.run([str(REPO / "packaging" / "install-deps.sh"), "check"], check=True)
        path = shutil.which(command)
    if path is None:
        pytest.skip(f"{command} is not installed")
    return path


def roff_text(line: str) -> str:
    """A roff source line with font escapes and hyphen escapes removed."""
    line = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", line)
    line = line.replace("\\-", "-").replace("\\&", "").replace("\\c", "")
    return re.sub(r"^\.(B|I|BI|IB|BR|RB|IR|RI)\s+", "", line).replace('"', "")


def man_sections(page: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in (MAN / page).read_text().splitlines():
        if line.startswith(".SH "):
            current = line[4:].strip().strip('"')
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def man_options() -> set[str]:
    """Options named in the tags (the line after each .TP) of rtpproxy(8)'s OPTIONS section."""
    lines = man_sections("rtpproxy.8")["OPTIONS"]
    found: set[str] = set()
    for i, line in enumerate(lines[:-1]):
        if line.startswith(".TP"):
            tag = roff_text(lines[i + 1])
            # Only the leading option words of the tag, not the argument text.
            for word in OPTION.findall(tag.split(" ", 1)[0] if "," not in tag else tag):
                found.add(word)
    return found


def usage_text() -> str | None:
    """rtpp.cli's USAGE string (or module docstring), read without importing it."""
    if not CLI.exists():
        return None
    tree = ast.parse(CLI.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "USAGE" for t in node.targets
        ):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    return ast.get_docstring(tree, clean=False)


def usage_options(usage: str) -> set[str]:
    """Options of the usage text: the first column of the Options section and the synopsis."""
    found: set[str] = set()
    section = None
    for line in usage.splitlines():
        header = re.match(r"^(\w[\w ]*):\s*$", line)
        if header:
            section = header.group(1).lower()
            continue
        if section == "options" and re.match(r"^\s+-", line):
            first_column = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            found.update(w.rstrip(",") for w in first_column.split() if w.startswith("-"))
            found = {w.split("=", 1)[0] for w in found}
        elif section in ("usage", "synopsis"):
            for cluster in re.findall(r"\[-([0-9A-Za-z]{2,})\]", line):
                found.update(f"-{ch}" for ch in cluster)
            found.update(w for w in OPTION.findall(line) if len(w) == 2 or w.startswith("--"))
    return {w for w in found if OPTION.fullmatch(w)}


@pytest.mark.parametrize("page", PAGES)
def test_groff_reports_no_warnings(page: str) -> None:
    groff = need_tool("groff")
    proc = subprocess.run(
        [groff, "-man", "-ww", "-z", str(MAN / page)], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stderr == "" and proc.stdout == ""


@pytest.mark.parametrize("page", PAGES)
def test_man_renders_page(page: str) -> None:
    man = need_tool("man")
    env = dict(os.environ, MANWIDTH="80")
    proc = subprocess.run(
        [man, "-P", "cat", "-l", str(MAN / page)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    text = re.sub(".\x08", "", proc.stdout)  # drop overstrike bold/underline
    assert "NAME" in text and "SYNOPSIS" in text
    assert len(text.splitlines()) > 40


def test_rtpproxy_page_has_every_section() -> None:
    sections = man_sections("rtpproxy.8")
    missing = [name for name in REQUIRED_SECTIONS if name not in sections]
    assert not missing


def test_every_usage_option_is_in_man_page() -> None:
    usage = usage_text()
    if usage is None:
        pytest.skip("lib/rtpp/cli.py does not exist yet")
    in_usage = usage_options(usage)
    assert "-l" in in_usage and "--strict-source" in in_usage  # the parser works
    missing = sorted(in_usage - man_options())
    assert not missing, f"options in the usage text but not in rtpproxy.8 OPTIONS: {missing}"


def test_every_man_page_option_is_in_usage() -> None:
    usage = usage_text()
    if usage is None:
        pytest.skip("lib/rtpp/cli.py does not exist yet")
    extra = sorted(man_options() - usage_options(usage))
    assert not extra, f"options in rtpproxy.8 OPTIONS but not in the usage text: {extra}"


def test_man_page_lists_every_error_code() -> None:
    errors = REPO / "lib" / "rtpp" / "commands" / "errors.py"
    if not errors.exists():
        pytest.skip("lib/rtpp/commands/errors.py does not exist yet")
    codes = {int(n) for n in re.findall(r"^\s+[A-Z0-9_]+ = (\d+)$", errors.read_text(), re.M)}
    text = roff_text("\n".join(man_sections("rtpproxy.8")["CONTROL PROTOCOL"]))
    missing = sorted(c for c in codes if not re.search(rf"\bE{c}\b", text))
    assert codes and not missing


def test_man_page_lists_every_statistic() -> None:
    stats = REPO / "lib" / "rtpp" / "stats.py"  # every G and Q counter, one row each
    names: set[str] = set()
    if stats.exists():
        rows = r'^\s+(?:process|stream|recording|session)\(\s*"(\w+)", "'
        names |= set(re.findall(rows, stats.read_text(), re.M))
    if not names:
        pytest.skip("no statistics tables yet")
    text = (MAN / "rtpproxy.8").read_text()
    missing = sorted(n for n in names if not re.search(rf"\b{n}\b", text))
    assert not missing
