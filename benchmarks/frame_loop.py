"""A frame loop: `pipe.predict(frame)` against the same model run by hand with ONNX Runtime and Pillow.

    python benchmarks/frame_loop.py [--rounds 5] [--calls 60]

What a game or a desktop program pays per frame for EfficientNet-Lite0 (the built-in package, the
variant `auto` runs): an RGB uint8 frame of a window's size in, classes out. The reference is what
a user writes without edgeai: an `onnxruntime.InferenceSession` of the same file with the same
thread count, the frame resized (shorter side to 256, bicubic) and centre-cropped to 224 by Pillow
as torchvision does it, normalised in numpy, softmax and top-5. Each engine runs in its own fresh
process, alternating, several rounds (on 2 cores thread pools sharing a process distort each
other); the figure is the median per-call time of a round, and the ratio is taken within the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

SIZES = [(224, 224), (640, 480), (1280, 720)]


def _frame(w: int, h: int):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(HERE.parent / "samples" / "cat.jpg").convert("RGB").resize((w, h), Image.Resampling.BICUBIC))


def _plain(model: str, threads: int | None):
    """The hand-written pipeline: what edgeai's predict is compared against."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def predict(frame):
        im = Image.fromarray(frame)
        s = 256 / min(im.size)
        im = im.resize((max(224, round(im.width * s)), max(224, round(im.height * s))), Image.Resampling.BICUBIC)
        left, top = (im.width - 224) // 2, (im.height - 224) // 2
        x = np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
        x = ((x - 0.5) / 0.5).transpose(2, 0, 1)[None]
        logits = sess.run(None, {name: np.ascontiguousarray(x)})[0][0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return np.argsort(-p)[:5]

    return predict


def worker(engine: str, calls: int) -> dict:
    import edgeai

    pipe = edgeai.load("efficientnet-lite0", provider="cpu")
    predict = pipe.predict if engine == "edgeai" else _plain(str(pipe.package.variant_path(pipe.variant)), pipe.threads)
    if engine != "edgeai":
        pipe.close()
    out = {}
    for w, h in SIZES:
        frame = _frame(w, h)
        for _ in range(5):
            predict(frame)
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            predict(frame)
            times.append((time.perf_counter() - t) * 1e3)
        out[f"{w}x{h}"] = statistics.median(times)
    return {"ms": out, "variant": pipe.variant, "threads": pipe.threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--out", default=str(HERE / "results" / "frame_loop.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.calls)))
        return
    from edgeai.home import ensure_builtin

    ensure_builtin("efficientnet-lite0")
    engines = ["plain", "edgeai"]
    figures: dict[str, list[dict]] = {e: [] for e in engines}
    for r in range(args.rounds):
        for engine in engines if r % 2 == 0 else engines[::-1]:
            cmd = [sys.executable, __file__, "--worker", engine, "--calls", str(args.calls)]
            res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            figures[engine].append(res)
            print(f"round {r + 1}/{args.rounds} {engine}: {res['ms']}", file=sys.stderr)
    first = figures["edgeai"][0]
    rows = []
    for w, h in SIZES:
        key = f"{w}x{h}"
        plain = statistics.median(f["ms"][key] for f in figures["plain"])
        ours = statistics.median(f["ms"][key] for f in figures["edgeai"])
        ratios = [e["ms"][key] / p["ms"][key] for e, p in zip(figures["edgeai"], figures["plain"])]
        rows.append(f"| {key} | {plain:.2f} | {ours:.2f} | **{ours / plain:.2f}** (rounds {min(ratios):.2f}-{max(ratios):.2f}) |")
    text = (
        "# A frame loop: `pipe.predict(frame)` vs ONNX Runtime and Pillow by hand, EfficientNet-Lite0, CPU\n\n"
        f"`python benchmarks/frame_loop.py --rounds {args.rounds} --calls {args.calls}`\n\n"
        + _report.machine_line(first["threads"] or "default") + "\n"
        f"Variant {first['variant']} (what `auto` runs here), batch 1, a photo resized to each frame size; each engine in "
        f"its own process, {args.rounds} rounds alternating, {args.calls} calls per size and round; medians of the rounds' median call.\n\n"
        "| frame | by hand (ms) | edgeai predict (ms) | ratio |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    _report.write(text, args.out)


if __name__ == "__main__":
    main()
