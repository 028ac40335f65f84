"""Child process of :func:`edgeai.quantize.measure.latencies`: time one model, print JSON.

Usage: python -m edgeai.quantize._latency MODEL FEED.npz THREADS RUNS
Runs in its own process so no other thread pool (PyTorch's, another session's) competes.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv: list[str]) -> None:
    model, feed_file, threads, runs = argv[0], argv[1], int(argv[2]), int(argv[3])
    from edgeai.session import session_options

    import onnxruntime as ort

    so = session_options(threads or None)
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feed = dict(np.load(feed_file))
    for _ in range(max(5, runs // 5)):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    used = so.intra_op_num_threads or None
    print(json.dumps({
        "p50_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "runs": runs,
        "threads": used,
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
