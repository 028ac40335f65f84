"""One measurement of :func:`edgeai.benchmark.bench`, alone in a fresh process; prints one JSON line.

    python -m edgeai._bench_worker CASE.json

Creates the session (or loads the PyTorch model), times the first inference, warms up, then
times calls until it has ``runs`` of them or ``min_time`` seconds have passed (at least
MIN_RUNS). An edgeai error is printed as ``{"error", "kind"}`` so the parent can re-raise it.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

MIN_RUNS = 30  # enough for a p90; a p99 comes from the runs of all rounds together
MAX_RUNS = 1000  # a sub-millisecond model: 1000 calls a process (3000 over the rounds) settle its p50 and p99; more only add seconds to every export
WARMUP_S = 0.2


def _peak_rss_mb() -> float | None:
    """This process's own peak resident memory.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process's address space.
    Not ``getrusage``'s ``ru_maxrss``: Linux carries it across fork + exec, so a worker started by
    a parent holding 1.2 GB (torch loaded, at export time) reported the parent's 1.2 GB."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _time(call, runs: int | None, min_time: float, sync=lambda: None) -> list[float]:
    start = time.perf_counter()
    n = 0
    while n < 5 or (time.perf_counter() - start < WARMUP_S and n < 50):
        call()
        n += 1
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
        if runs is not None:
            if len(times) >= runs:
                break
        elif (len(times) >= MIN_RUNS and time.perf_counter() - start >= min_time) or len(times) >= MAX_RUNS:
            break
    return times


def _onnxruntime(spec: dict, feed: dict) -> dict:
    from edgeai.session import Session

    t = time.perf_counter()
    session = Session(spec["model"], spec["inputs"], spec["outputs"], provider=spec["provider"], strict=True,
                      threads=spec["threads"], device_id=spec.get("device_id", 0), model_sha256=spec.get("sha256"),
                      tensorrt=spec.get("tensorrt"))
    session_ms = (time.perf_counter() - t) * 1e3
    if spec.get("per_row") or spec.get("rows"):  # a dynamic INT8 variant: one text (edgeai.text) or row (edgeai.rows) per call
        from edgeai.rows import split_rows

        rows = split_rows(feed, spec["rows"][0] if spec.get("rows") else dict.fromkeys(feed, 0))
        call = lambda: [session.run(row) for row in rows]  # noqa: E731
    else:
        call = lambda: session.run(feed)  # noqa: E731
    t = time.perf_counter()
    call()
    first_ms = (time.perf_counter() - t) * 1e3
    times = _time(call, spec["runs"], spec["min_time"])
    return {"provider": session.provider, "threads": spec["threads"], "session_ms": session_ms, "first_ms": first_ms,
            "times_ms": times, "placement": session.choice.placement}


def _pytorch(spec: dict, feed: dict) -> dict:
    import torch

    from edgeai.export.reference import reference_module
    from edgeai.package import Package

    if spec["threads"]:
        torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    if device == "cuda" and not torch.cuda.is_available():
        from edgeai.errors import ProviderError

        raise ProviderError("PyTorch here has no CUDA device to compare with; compare on the CPU (--provider cpu).")
    pkg = Package.open(spec["package"])
    t = time.perf_counter()
    if device == "cuda":
        device = f"cuda:{spec.get('device_id', 0)}"
    module = reference_module(pkg, spec.get("factory")).to(device)
    args = [torch.from_numpy(feed[i["name"]]).to(device) for i in pkg.manifest["inputs"]]
    session_ms = (time.perf_counter() - t) * 1e3
    sync = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        t = time.perf_counter()
        module(*args)
        sync()
        first_ms = (time.perf_counter() - t) * 1e3
        times = _time(lambda: module(*args), spec["runs"], spec["min_time"], sync)
    return {"provider": f"torch-{spec['device']}", "threads": torch.get_num_threads(), "session_ms": session_ms,
            "first_ms": first_ms, "times_ms": times}


def _same_model(spec: dict, feed: dict) -> dict:
    """Refuse a --factory whose model does not compute what the package's fp32 computes: its name
    alone was checked, and another network behind it was timed as the package's (review). A
    process of its own, before the timed ones: an extra session would count in their memory."""
    import onnxruntime as ort
    import torch

    from edgeai.errors import InputError
    from edgeai.export.reference import reference_module
    from edgeai.package import Package

    pkg, factory = Package.open(spec["package"]), spec["factory"]
    with torch.inference_mode():
        out = reference_module(pkg, factory)(*[torch.from_numpy(feed[i["name"]]) for i in pkg.manifest["inputs"]])
    got = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (tuple, list)) else [out]
    session = ort.InferenceSession(str(pkg.variant_path("fp32")), providers=["CPUExecutionProvider"])
    ref = session.run(None, {i["name"]: feed[i["name"]] for i in pkg.manifest["inputs"]})
    for g, r in zip(got, ref):
        g = g.detach().float().cpu().numpy() if hasattr(g, "detach") else np.asarray(g)
        r = np.asarray(r, dtype=np.float64)
        if g.shape != r.shape or not np.allclose(g, r, rtol=1e-2, atol=1e-3 * max(1.0, float(np.abs(r).max(initial=0)))):
            diff = "other shapes" if g.shape != r.shape else f"largest difference {float(np.abs(g - r).max()):.3g}"
            raise InputError(f"--factory {factory} builds a model that does not compute what {pkg.name}'s fp32 does ({diff}): "
                             "name the factory, and the weights, the package was exported from.")
    return {}


def main(argv: list[str]) -> int:
    from edgeai.errors import EdgeAIError

    spec = json.loads(open(argv[0], encoding="utf-8").read())
    with np.load(spec["feed"], allow_pickle=False) as z:
        feed = {k: z[k] for k in z.files}
    try:
        engine = {"pytorch": _pytorch, "same-model": _same_model}.get(spec["engine"], _onnxruntime)
        result = engine(spec, feed)
    except EdgeAIError as e:
        print(json.dumps({"error": str(e), "kind": type(e).__name__}))
        return 2
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
