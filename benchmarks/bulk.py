"""Bulk throughput: `edgeai run DIR --out results.jsonl` vs a plain loop of `predict` calls.

    python benchmarks/bulk.py [--images 48] [--rounds 3] [--batch-size 8] [--workers 2]

EfficientNet-Lite0 (the built-in package) on a folder of real photos (scikit-image's and
scikit-learn's, scaled to between 0.3 and 3 megapixels and saved as JPEG), where decoding costs
as much as inference. Each engine runs in its own fresh process, alternating, several rounds;
the figure is images per second over the whole folder, and the ratio is taken within the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def make_folder(folder: Path, n: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    from edgeai.data.photos import CALIBRATION, HELD_OUT, image_set

    photos = [im for _, im in image_set(CALIBRATION + HELD_OUT, per_photo=0, seed=0)]
    if not photos:
        raise SystemExit("needs scikit-image and scikit-learn (the export extra) for the photos")
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        im = photos[i % len(photos)].convert("RGB")
        mp = rng.uniform(0.3, 3.0) * 1e6
        s = (mp / (im.width * im.height)) ** 0.5
        p = folder / f"{i:03d}.jpg"
        im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BICUBIC).save(p, quality=90)
        paths.append(p)
    return paths


def worker(engine: str, folder: str, batch_size: int, workers: int) -> dict:
    import edgeai
    from edgeai.bulk import list_inputs, run_bulk

    pipe = edgeai.load("efficientnet-lite0", provider="cpu")
    files = list_inputs([folder], text=False)
    pipe.predict(files[0])  # warm the session up for both engines alike
    t = time.perf_counter()
    if engine == "loop":
        for f in files:
            pipe.predict(f)
    else:
        with tempfile.TemporaryDirectory() as d:
            run_bulk(pipe, files, Path(d) / "out.jsonl", batch_size=batch_size, workers=workers)
    seconds = time.perf_counter() - t
    return {"images": len(files), "seconds": seconds, "per_s": len(files) / seconds, "variant": pipe.variant}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "bulk.md"))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.batch_size, args.workers)))
        return
    from edgeai.home import ensure_builtin

    ensure_builtin("efficientnet-lite0")
    with tempfile.TemporaryDirectory() as d:
        paths = make_folder(Path(d) / "photos", args.images)
        from PIL import Image

        sizes = [Image.open(p).size for p in paths]
        mps = [w * h / 1e6 for w, h in sizes]
        figures: dict[str, list[dict]] = {"loop": [], "bulk": []}
        engines = list(figures)
        for r in range(args.rounds):
            for engine in engines if r % 2 == 0 else engines[::-1]:
                cmd = [sys.executable, __file__, "--worker", engine, str(Path(d) / "photos"),
                       "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
                res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
                figures[engine].append(res)
                print(f"round {r + 1}/{args.rounds} {engine}: {res['per_s']:.2f} images/s", file=sys.stderr)
    loop = statistics.median(f["per_s"] for f in figures["loop"])
    bulk = statistics.median(f["per_s"] for f in figures["bulk"])
    text = (
        "# Bulk throughput: a folder of photos, EfficientNet-Lite0, CPU\n\n"
        f"`python benchmarks/bulk.py --images {args.images} --rounds {args.rounds} --batch-size {args.batch_size} "
        f"--workers {args.workers}`\n\n"
        + _report.machine_line("default") + "\n"
        f"{args.images} JPEG photos (scikit-image/scikit-learn, scaled to {min(mps):.1f}-{max(mps):.1f} MP, median "
        f"{statistics.median(mps):.1f} MP); variant {figures['loop'][0]['variant']}; each engine in its own process, "
        f"{args.rounds} rounds alternating; medians.\n\n"
        "| engine | images/s | ratio |\n|---|---|---|\n"
        f"| plain loop: `for f in files: pipe.predict(f)` | {loop:.2f} | 1.00 |\n"
        f"| `edgeai run DIR --out results.jsonl --batch-size {args.batch_size} --workers {args.workers}` (run_bulk) "
        f"| {bulk:.2f} | **{bulk / loop:.2f}** |\n"
    )
    _report.write(text, args.out)


if __name__ == "__main__":
    main()
