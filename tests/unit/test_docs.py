"""The README is a front door: its two marked commands are where `.ci/run` and readers look for
them, it stays short, and every relative link in it and in docs/ leads to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_LINES = 150
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def marked_command(text: str, marker: str) -> str:
    """The command `.ci/run` reads: the line after the fence that follows the marker's line."""
    lines = text.splitlines()
    index = lines.index(marker)
    assert lines[index + 1] == "```bash", f"{marker} is not followed by a ```bash fence"
    assert lines[index + 3] == "```", f"{marker}'s block holds more than one line"
    return lines[index + 2]


def relative_links(text: str) -> list[str]:
    """Every link target that is a path in this repository: no URL scheme, no mail, no bare anchor."""
    without_code = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    without_code = re.sub(r"`[^`\n]*`", "", without_code)
    targets = LINK.findall(without_code)
    return [t for t in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t) and not t.startswith("#")]


def broken_links(page: Path) -> list[str]:
    return [
        f"{page.relative_to(ROOT)}: {target}"
        for target in relative_links(page.read_text())
        if not (page.parent / target.split("#", 1)[0]).exists()
    ]


def test_readme_has_both_marked_commands():
    text = README.read_text()
    main = marked_command(text, "<!-- main-command -->")
    tests = marked_command(text, "<!-- test-command -->")
    assert main.startswith("apt-get install -y ") and "python -m greenai.train -m" in main
    # Two tests at a time: the test extra installs pytest-xdist.
    assert tests.startswith("apt-get install -y ") and tests.endswith("python -m pytest -n 2")


def test_readme_is_at_most_150_lines():
    assert len(README.read_text().splitlines()) <= MAX_README_LINES


def test_every_relative_link_points_to_a_file_that_exists():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 1
    assert [broken for page in pages for broken in broken_links(page)] == []


def test_the_link_check_sees_a_broken_link(tmp_path):
    """The check itself can fail: a link to a missing page is named, URLs and anchors are not."""
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("")
    page.write_text(
        "[a](there.md#part) [b](missing.md) [c](https://example.org/x) [d](#anchor) `[e](code.md)`\n"
        "![f](missing.png)\n```\n[g](in-a-block.md)\n```\n"
    )
    assert relative_links(page.read_text()) == ["there.md#part", "missing.md", "missing.png"]
    missing = [t for t in relative_links(page.read_text()) if not (tmp_path / t.split("#", 1)[0]).exists()]
    assert missing == ["missing.md", "missing.png"]
