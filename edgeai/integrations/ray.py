"""Scale-out on Ray: the same package over a Ray Dataset, the same JSON lines as ``edgeai run --out``.

    from edgeai.integrations.ray import run_ray
    run_ray("pkg/", ["a.jpg", "b.jpg", ...], "results.jsonl", address="local")   # or "ray://host:10001"

    edgeai run --model pkg/ photos/ --out results.jsonl --ray local

Each Ray actor loads the package once (one pipeline per actor) and answers batches with the
code of a single-machine bulk run (``edgeai.bulk``), so lines, error lines and resuming are the
same; the driver writes the lines in input order. The package reaches the workers by path (a
shared filesystem, or one machine) or, with ``ship="object_store"``, through Ray's object store.
Actors that die are restarted and their batches retried by Ray Data; each input is written once.
Ray is the optional ``ray`` extra.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

from edgeai.errors import DependencyError, InputError, PackageError

__all__ = ["run_ray"]


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DependencyError("Running on Ray needs the ray extra: pip install 'edgeai[ray]'.") from None
    return ray


class _Worker:
    """One pipeline per Ray actor; a batch of inputs in, their JSON lines out."""

    def __init__(self, source: dict, top_k: int | None, provider: str, variant: str) -> None:
        import edgeai

        path = source.get("path")
        if path is None:  # shipped through the object store: {relative path: bytes}
            import ray

            files = ray.get(source["ref"])
            self._tmp = tempfile.TemporaryDirectory(prefix="edgeai-ray-")
            for rel, data in files.items():
                target = Path(self._tmp.name, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            path = self._tmp.name
        self.pipe = edgeai.load(path, provider=provider, variant=variant)
        self.top_k = top_k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from edgeai.bulk import result_batches
        from edgeai.journal import record_line, stamp
        from edgeai.text_inputs import TextLine, UnreadFile

        # a text line read from a file travels with where it came from ("at"), so its line says so;
        # a file that could not be read, with why ("refused")
        items = [UnreadFile(str(at), str(why)) if why else TextLine(str(x), str(at)) if at else str(x)
                 for x, at, why in zip(batch["input"], batch["at"], batch["refused"])]
        gen = result_batches(self.pipe, items, len(items), 1, self.top_k, {})  # a generation: the default options
        tail = stamp(self.pipe)
        lines = [record_line(r, tail) for records in gen for r in records]
        return {"index": batch["index"], "line": np.array(lines, dtype=object)}


def _package_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_ray(
    package: str | os.PathLike,
    items: list[str],
    out: str | os.PathLike,
    address: str = "local",
    batch_size: int = 16,
    actors: int | None = None,
    ship: str = "path",
    num_cpus: int | None = None,
    provider: str = "cpu",
    variant: str = "auto",
    top_k: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    retry_errors: bool = False,
    new_file: bool = True,
) -> dict[str, Any]:
    """Answer every item not yet in ``out`` on Ray; returns the same figures as ``run_bulk``.

    ``address``: ``"local"`` starts a local Ray instance (``num_cpus``), anything else is passed
    to ``ray.init(address=...)``; an already initialised Ray is used as it is. ``variant="auto"``
    is chosen once, here, for ``provider``, so every actor runs the same variant; ``out`` is
    checked (and ``retry_errors`` applied) as ``run_bulk`` does.
    """
    import time

    from edgeai.journal import exclusive, model_id, pending
    from edgeai.pipeline import open_package, resolve_variant
    from edgeai.tasks import check_top_k

    ray = _ray()
    if ship not in ("path", "object_store"):
        raise InputError(f"ship is 'path' or 'object_store', not {ship!r}.")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1.")
    pkg = open_package(package)
    check_top_k(pkg, top_k)  # before the file is touched, not as an error line per input
    variant, _ = resolve_variant(pkg, provider, variant)
    # Checked here, once: in the actors a damaged file is an ActorDiedError under pages of Ray's
    # tracebacks, retried forever, not one sentence.
    pkg.variant_path(variant)
    if damaged := pkg.damaged_assets():
        raise PackageError(pkg.damage_sentence(damaged))
    _reachable(address, ray)
    out = Path(out)
    with exclusive(out) as held:
        from edgeai.bulk import ranked

        todo, stats = pending(items, out, model_id(pkg, variant), variant, retry_errors, new_file, None, ranked(pkg, top_k))
        f = held.reopen_if_replaced()
        t0 = time.perf_counter()
        started = _start(ray, address, num_cpus)
        try:
            if todo:
                source = {"path": str(pkg.path.resolve())} if ship == "path" else {"ref": ray.put(_package_files(pkg.path))}
                worker = {"source": source, "top_k": top_k, "provider": provider, "variant": variant}
                _write(_dataset(ray, todo, batch_size, actors, worker), f, batch_size, len(todo), stats, progress)
        finally:
            if started:
                ray.shutdown()
    stats["seconds"] = time.perf_counter() - t0
    return stats


def _reachable(address: str, ray, timeout: float = 10.0) -> None:
    """One sentence when nothing answers at a HOST:PORT address: ray.init retries such an address
    for as long as it runs, printing only its own log lines (review: still waiting at 500 s)."""
    import socket

    if address in ("local", "auto") or ray.is_initialized():
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # Ray's own rules for what else it takes
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise InputError(f"Could not reach Ray at {address!r}: nothing answered at {host}:{port} "
                         f"({e.strerror or type(e).__name__}).") from None


def _start(ray, address: str, num_cpus: int | None) -> bool:
    """Connect to (or start) Ray unless this process already has; True when this call started it."""
    import logging

    for name in ("ray", "ray.data"):  # Ray Data logs every dataset it runs at INFO; keep stderr for edgeai
        logging.getLogger(name).setLevel(logging.WARNING)
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as e:  # ConnectionError, ValueError, RuntimeError from Ray itself
        raise InputError(f"Could not reach Ray at {address!r}: {str(e).strip().splitlines()[0][:200]}") from None
    return True


def _dataset(ray, todo: list[str], batch_size: int, actors: int | None, worker: dict):
    """The items as a Ray dataset answered by ``actors`` :class:`_Worker` actors, in input order."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # lines in input order, as a single machine writes them
    ctx.enable_progress_bars = False
    n = actors or max(1, int(ray.available_resources().get("CPU", 1)) // 2)
    ds = ray.data.from_items([{"index": i, "input": str(x), "at": getattr(x, "input", ""),
                                  "refused": getattr(x, "error", "")} for i, x in enumerate(todo)])
    return ds.map_batches(_Worker, batch_size=batch_size, batch_format="numpy", concurrency=n,
                          fn_constructor_kwargs=worker)


def _write(ds, f: TextIO, batch_size: int, total: int, stats: dict, progress: Callable[[int, int], None] | None) -> None:
    """Append the answered lines to ``f`` (--out) as they come, counting errors into ``stats``."""
    import json

    # Ray Data restarts dead actors and retries their batches by default (max_restarts=-1);
    # the index column makes sure a retried batch is written once.
    if progress:
        progress(0, total)
    seen: set[int] = set()
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        lines = []
        for i, line in zip(batch["index"], batch["line"]):
            if int(i) in seen:  # a retried batch cannot write an input twice
                continue
            seen.add(int(i))
            lines.append(str(line))
            if '"error"' in line or '"truncated"' in line:
                rec = json.loads(line)
                stats["truncated"] += 1 if rec.get("truncated") else 0
                if "error" in rec:
                    stats["errors"] += 1
                    stats["first_error"] = stats["first_error"] or rec["error"]
        f.write("".join(x + "\n" for x in lines))
        f.flush()
        stats["done"] += len(lines)
        if progress:
            progress(stats["done"], total)
    os.fsync(f.fileno())
