"""Every ```bash and ```python block of README.md runs as written, against real packages.

Marks: HTML comments (invisible on GitHub) on the lines right before a fenced block, one a line:

    <!-- readme-test: skip (WHY) -->                  the block is not run
    <!-- readme-test: skip-line "TEXT" (WHY) -->      the block's lines containing TEXT are not run
    <!-- readme-test: exit N "TEXT" (WHY) -->         its lines containing TEXT must exit with N, not 0
    <!-- readme-test: add "ARGS" "TEXT" (WHY) -->     its lines containing TEXT run with ARGS appended

Every mark must say why, and its TEXT must match a line of its block (a stale mark fails).
Blocks of other languages (```toml, plain output blocks) are not run. The two set-up commands
are marked skip; the last command of the first one (`edgeai run samples/cat.jpg`) runs here.

How: the blocks run in README order in one temporary working directory holding a copy of
samples/, as a reader does from the repository root: each shell line (backslash-continued lines
joined) through `bash -c`, each Python block in a fresh `python -c` process, each with a timeout;
PATH starts with this venv's bin (`edgeai`, `python`) and $EDGEAI_HOME is a directory of its own.

Real packages, no new builds: that $EDGEAI_HOME holds copies of the session's EfficientNet-Lite0
(`cnn_pkg`, first use through `edgeai run`), MiniLM (`bert_pkg`) and sentiment LSTM (`lstm_pkg`)
packages under edgeai.home.builtin_dir's names, so `--model cnn` and `edgeai.load("bert")` build
nothing. A line `edgeai export NAME -o DIR` for a built-in NAME (minutes: MiniLM ~1.5, the LSTM
~3) is satisfied by copying the session's package of NAME into DIR; the test checks that the line
has no other option, so it asks for exactly what the fixture ran (`export_model(NAME, DIR)`,
the CLI's defaults), and that the copy is a package of NAME's family with the int8 chain's variants.
`edgeai export FILE.py:FACTORY` is cheap and runs for real.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
MARK = re.compile(r'<!-- readme-test: (skip|skip-line|exit|add)((?: (?:\d+|"[^"]+"))*) \((.+)\) -->$')
TIMEOUT = 420


@dataclass
class Block:
    lang: str
    line: int  # of the opening fence, 1-based
    body: list[str]
    marks: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        return any(kind == "skip" for kind, _ in self.marks)

    def mark_for(self, kind: str, line: str) -> list[str] | None:
        return next((args for k, args in self.marks if k == kind and args[-1] in line), None)


def _blocks() -> list[Block]:
    lines, blocks, i = README.read_text().splitlines(), [], 0
    while i < len(lines):
        m = re.match(r"\s*```(\w*)$", lines[i])
        if not m:
            i += 1
            continue
        j = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == "```")
        marks, k = [], i - 1
        while k >= 0 and lines[k].startswith("<!-- readme-test:"):
            mk = MARK.match(lines[k])
            assert mk, f"README.md:{k + 1}: malformed readme-test mark (see tests/test_readme.py): {lines[k]}"
            marks.append((mk.group(1), [a.strip('"') for a in re.findall(r'\d+|"[^"]+"', mk.group(2))]))
            k -= 1
        blocks.append(Block(m.group(1), i + 1, lines[i + 1 : j], marks))
        i = j + 1
    return blocks


def _shell_lines(block: Block) -> list[str]:
    out, pending = [], ""
    for raw in block.body:
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


BLOCKS = _blocks()
RUN = [b for b in BLOCKS if b.lang in ("bash", "python") and not b.skipped]


def test_marks_are_well_formed_and_not_stale():
    runnable = [b for b in BLOCKS if b.lang in ("bash", "python")]
    assert len(runnable) >= 10
    for b in BLOCKS:
        for kind, args in b.marks:
            assert b.lang in ("bash", "python"), f"README.md:{b.line}: a mark on a ```{b.lang} block"
            expected = {"skip": 0, "skip-line": 1, "exit": 2, "add": 2}[kind]
            assert len(args) == expected, f"README.md:{b.line}: {kind} takes {expected} argument(s), got {args}"
            if kind != "skip":
                assert any(args[-1] in ln for ln in b.body), f"README.md:{b.line}: {kind} {args[-1]!r} matches no line"


def test_ci_runs_the_readme_test_command():
    first, second = [b for b in BLOCKS if b.lang == "bash"][:2]
    assert first.skipped and second.skipped
    command = "\n".join(second.body)
    assert "pytest" in command and "[export,dev,report,ray]" in command
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_bulk_examples_write_different_files():
    """The bulk lines that run here, in one directory, each write their own file (a shared one would resume)."""
    outs = [re.search(r"--out (\S+)", ln).group(1) for b in RUN if b.lang == "bash" for ln in _shell_lines(b)
            if "--out " in ln and b.mark_for("skip-line", ln) is None]
    assert len(outs) >= 3 and len(set(outs)) == len(outs), outs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cnn_pkg, bert_pkg, lstm_pkg):
    """A working directory with samples/, and an $EDGEAI_HOME holding the session's real packages."""
    from edgeai.home import builtin_dir

    work, home = tmp_path_factory.mktemp("readme"), tmp_path_factory.mktemp("readme-home")
    shutil.copytree(ROOT / "samples", work / "samples", ignore=shutil.ignore_patterns("__pycache__"))
    built = {"efficientnet-lite0": cnn_pkg, "bert": bert_pkg, "lstm": lstm_pkg}
    for name, pkg in built.items():
        shutil.copytree(pkg, home / builtin_dir(name).name)
    env = {**os.environ, "EDGEAI_HOME": str(home), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return work, env, built


def _run(argv: list[str], work: Path, env: dict, where: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{where}: still running after {TIMEOUT} s")


def _copy_export(line: str, work: Path, built: dict[str, Path]) -> bool:
    """`edgeai export NAME -o DIR` of a built-in: copy the session's package instead of exporting again."""
    from edgeai.home import resolve_builtin
    from edgeai.package import Package

    argv = shlex.split(line, comments=True)
    if argv[:2] != ["edgeai", "export"] or ":" in argv[2] or resolve_builtin(argv[2]) is None:
        return False
    assert len(argv) == 5 and argv[3] == "-o", f"{line!r}: the fixture builds `edgeai export NAME -o DIR` with no other option"
    fam = resolve_builtin(argv[2])
    pkg = built[fam.model]
    target = work / argv[4]
    shutil.copytree(pkg, target)
    copy = Package.open(target)
    assert copy.manifest["family"] == fam.name and {"fp32", "optimized", "int8"} <= set(copy.variants)  # the CLI's int8 chain
    return True


@pytest.mark.slow  # the real packages
def test_first_command_prints_what_the_readme_shows(workdir):
    work, env, _ = workdir
    command = "\n".join(next(b for b in BLOCKS if b.lang == "bash").body).split("&&")[-1].strip()
    assert command == "edgeai run samples/cat.jpg"
    r = _run(["bash", "-c", command], work, env, command)
    assert r.returncode == 0, r.stderr[-3000:]
    shown = README.read_text().split("What the first command prints", 1)[1].split("```")[1]
    assert r.stdout.splitlines()[0].split(" · ")[0] == shown.strip().splitlines()[0].split(" · ")[0]
    top = r.stdout.splitlines()[3:5]  # the first two rows of the table
    assert any("tiger cat" in row for row in top) and "tiger cat" in shown


@pytest.mark.slow
@pytest.mark.parametrize("block", RUN, ids=[f"{b.lang}-L{b.line}" for b in RUN])
def test_block_runs(block: Block, workdir):
    work, env, built = workdir
    if block.lang == "python":
        r = _run([sys.executable, "-c", "\n".join(block.body)], work, env, f"README.md:{block.line}")
        assert r.returncode == 0, f"README.md:{block.line}: the Python block failed:\n{r.stderr[-3000:]}"
        return
    for line in _shell_lines(block):
        where = f"README.md:{block.line}: {line}"
        if block.mark_for("skip-line", line) is not None or _copy_export(line, work, built):
            continue
        add = block.mark_for("add", line)
        command = shlex.join(shlex.split(line, comments=True) + shlex.split(add[0])) if add else line
        r = _run(["bash", "-c", command], work, env, where)
        code = int(block.mark_for("exit", line)[0]) if block.mark_for("exit", line) else 0
        assert r.returncode == code, f"{where}: exit {r.returncode}, expected {code}\n{r.stdout[-1500:]}\n{r.stderr[-3000:]}"
        out = re.search(r"--out (\S+)|(?:^|\s)-o (\S+)", line)
        if out and code == 0:
            written = work / (out.group(1) or out.group(2))
            assert written.exists(), f"{where}: wrote nothing"
            if written.suffix == ".jsonl":  # a bulk run over the samples: one line each, none an error
                records = [json.loads(x) for x in written.read_text().splitlines()]
                assert records and not [x for x in records if "error" in x], f"{where}: {records}"
