"""The README and docs/ pages: every python example runs, links point into the
repository, and the facts stated in several places are stated the same way."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def python_blocks(path):
    text = path.read_text()
    return [(path.name, text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


BLOCKS = [b for p in PAGES for b in python_blocks(p)]


def test_readme_has_the_three_uses_and_stays_short():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "make demo     # offload" in text and "make test     # the test suite" in text
    names = [b[0] for b in BLOCKS]
    assert names.count("README.md") >= 4       # verify, estimate, offload, Conv2d


@pytest.mark.parametrize("page, line, code", BLOCKS, ids=[f"{b[0]}:{b[1]}" for b in BLOCKS])
def test_python_example_runs(page, line, code, capsys):
    exec(compile(code, f"{page}:{line}", "exec"), {"__name__": "__example__"})
    assert capsys.readouterr().out          # every example prints what it shows


def test_links_stay_in_the_repository():
    for page in PAGES:
        text = page.read_text()
        assert "DESIGN" not in text and "TOOLCHAIN.md" not in text, page.name
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            assert not target.startswith("http"), (page.name, target)
            assert (page.parent / target).exists(), (page.name, target)


def test_clock_defaults_are_stated_as_the_code_has_them():
    from systolic_conv.clocks import CLOCK_POLICY, MEASURED_FMAX
    assert [(m.rows, m.cols, m.fmax_mhz) for m in MEASURED_FMAX] == [(4, 4, 74.3), (8, 8, 56.2)]
    rule = " ".join(CLOCK_POLICY.split())
    for name in ("README.md", "docs/estimation.md"):
        text = " ".join((ROOT / name).read_text().replace("`", "").replace("> ", "").split())
        assert rule.lower() in text.lower(), name
