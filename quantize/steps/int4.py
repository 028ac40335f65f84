"""``int4``: 4-bit weight-only quantization of the MatMul weights (ONNX Runtime's MatMulNBits).

Each block of ``block_size`` weights along the input axis gets its own scale (symmetric int4),
and ONNX Runtime's ``MatMulNBits`` kernel dequantizes on the fly: the weights take about an
eighth of their float size, which is what bounds a small language model's decoding speed on a
CPU. The block size trades accuracy (smaller blocks) against speed and size: each candidate is
quantized, timed on a decode step and scored on the tuning texts (never the held-out ones, on
which the runner then records the chosen one); the fastest that meets the package's budget on
the tuning texts wins, else the most accurate.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

from edgeai.data.compare import budget_met, compare, run_batches
from edgeai.errors import InputError
from edgeai.package import Package

from ..runner import Context, Step, cpu_runner
from ._ort import quiet

BLOCK_SIZES = (32, 128)


def int4_weights(src: Path, dest: Path, block_size: int) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    with quiet():
        config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4)
        q = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=config)
        q.process()
        q.model.save_model_to_file(str(dest), use_external_data_format=False)


def _decode_ms(pkg: Package, path: Path, rounds: int = 10) -> float:
    from edgeai._ortcache import plain_cpu_session
    from edgeai.benchmark import bench_feed
    from edgeai.session import session_options

    feed = bench_feed(pkg, 1)
    session = plain_cpu_session(path, session_options())  # as the runtime loads it
    for _ in range(2):
        session.run(None, feed)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


class Int4(Step):
    name = "int4"
    variant = "int4"

    def requires(self, pkg: Package) -> None:
        if "generation" not in pkg.manifest:
            raise InputError("int4 (4-bit weight-only) is for text-generation packages, whose speed is bound by reading weights; "
                             "use int8 for this model.")

    def source(self, pkg: Package, ctx: Context) -> str:
        # The decoder fusions form no Gemm; ONNX Runtime's extended level fuses MatMul+Add into
        # Gemm, which MatMulNBits does not take, so that graph is not used.
        from .fuse_decoder import decoder_source

        return decoder_source(pkg)

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        from edgeai.data.feeds import generation_feeds, next_tokens
        from edgeai.data.texts import TUNING

        tuning = generation_feeds(pkg, ctx.tuning or TUNING)
        ref = run_batches(cpu_runner(pkg, pkg.variant_path("fp32")), tuning)
        tried = {}
        for block in BLOCK_SIZES:
            ctx.say(f"trying 4-bit MatMul weights in blocks of {block} (of {', '.join(map(str, BLOCK_SIZES))}): "
                    "agreement and one decode step's time")
            path = work / f"int4-b{block}.onnx"
            int4_weights(src, path, block)
            figs = compare(ref, run_batches(cpu_runner(pkg, path), tuning), pkg.task, targets=next_tokens(tuning))
            tried[block] = {"ms": round(_decode_ms(pkg, path), 3), "top1_agreement": figs["top1_agreement"],
                            "perplexity_kept": round(figs["perplexity_kept"], 4),
                            "meets_budget": budget_met(ctx.budget_of(pkg), figs)}
        ok = [b for b, t in tried.items() if t["meets_budget"]]
        block = min(ok, key=lambda b: tried[b]["ms"]) if ok else max(tried, key=lambda b: tried[b]["top1_agreement"])
        shutil.move(work / f"int4-b{block}.onnx", dest)  # $TMPDIR may be another filesystem (review)
        return {"method": "weight-only", "weights": "int4 (symmetric, per block)", "block_size": block,
                "kernel": "MatMulNBits", "activations": "int8 per block at compute (accuracy level 4)",
                "block_sizes_tried": {str(b): t for b, t in tried.items()}}
