"""The README's two opening commands stay true: CI runs the second verbatim, the first names a real sample."""

from __future__ import annotations

import re

from conftest import ROOT


def _commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readme_test_command():
    first, second = _commands()[:2]
    assert "pytest" in second and "[export,dev,report,ray]" in second
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert second in ci


def test_readme_main_command_runs_a_real_sample():
    first = _commands()[0]
    photo = re.search(r"edgeai run (\S+)$", first).group(1)
    assert (ROOT / photo).is_file()
