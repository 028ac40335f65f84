"""The cold `edgeai run`: a whole process classifying one photo, against importing its libraries.

    python benchmarks/first_minute.py [--rounds 7] [--package DIR]

Target (issue: a faster first minute): the process wall time of
`edgeai run --model PKG samples/cat.jpg` <= 1.6x that of
`python -c "import numpy, onnxruntime, PIL, typer"` on the same machine, in one run.
Whole processes are timed here (not ``edgeai.bench``, which times calls inside a process):
start-up is the thing measured. The two commands alternate, a fresh process each; the table
gives the median and the best round. The package is built into $EDGEAI_HOME on first use and
run once before timing, so the one-time work of a first load (the per-machine optimized graph,
remembered file hashes) is not what is measured; `--cold` clears those first each round.
Both commands run without PYTHONDONTWRITEBYTECODE (set on some of these machines), as on a
user's machine: Python's bytecode cache of edgeai's own modules is written by that first run,
as pip wrote the libraries' at install time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

ROOT = HERE.parent
BASELINE = [sys.executable, "-c", "import numpy, onnxruntime, PIL, typer"]


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - start


def measure(package: str, rounds: int, cold: bool) -> dict[str, list[float]]:
    from edgeai.home import home

    run = [str(Path(sys.executable).with_name("edgeai")), "run", "--model", package, str(ROOT / "samples" / "cat.jpg")]
    _wall(run)  # the first load of this variant on this machine (see the docstring)
    times: dict[str, list[float]] = {"baseline": [], "edgeai run": []}
    for r in range(rounds):
        if cold:
            for sub in ("ort-cpu", "hashes"):
                shutil.rmtree(home() / sub, ignore_errors=True)
        order = [("baseline", BASELINE), ("edgeai run", run)]
        for name, cmd in order if r % 2 == 0 else reversed(order):
            times[name].append(_wall(cmd))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--package", help="package directory [default: the built-in efficientnet-lite0]")
    ap.add_argument("--cold", action="store_true", help="clear the per-machine graph cache and hash memory every round")
    ap.add_argument("--out", default=str(HERE / "results" / "first-minute.md"))
    args = ap.parse_args()
    from edgeai.home import ensure_builtin

    package = args.package or str(ensure_builtin("efficientnet-lite0"))
    t = measure(package, args.rounds, args.cold)
    ratios = [e / b for e, b in zip(t["edgeai run"], t["baseline"])]
    lines = [
        "# The cold `edgeai run` vs importing its libraries",
        "",
        f"Command: `python benchmarks/first_minute.py --rounds {args.rounds}{' --cold' if args.cold else ''}`  ",
        _report.machine_line("default"),
        f"Date: {time.strftime('%Y-%m-%d')}. Each command a fresh process, alternating, {args.rounds} rounds.",
        "",
        "| process | median s | best s |",
        "|---|---|---|",
        *(f"| `{name}` | {statistics.median(v):.3f} | {min(v):.3f} |" for name, v in t.items()),
        "",
        f"Ratio edgeai run / imports, per round: median **{statistics.median(ratios):.2f}**, best {min(ratios):.2f} "
        "(target <= 1.6).",
    ]
    _report.write("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
