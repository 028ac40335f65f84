"""``int8`` by dynamic quantization: int8 weights, activations quantized at run time."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

import onnx

from edgeai.package import _TMP_MARK, Package

from ..runner import Context, Step
from ._ort import quiet


def dynamic_int8(src: Path, dest: Path, per_channel: bool, exclude: list[str] | None = None,
                 reduce_range: bool = False) -> dict:
    """``quantize_dynamic`` of ``src`` to ``dest``, the nodes named in ``exclude`` kept in float; its recipe.

    ``reduce_range``: 7-bit weights, so that AVX2's u8 x s8 kernel (no VNNI) cannot saturate its
    int16 pair sums (see saturation.py)."""
    from onnx.shape_inference import InferenceError
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic first rewrites each Gemm as a MatMul named "<gemm>_MatMul" (+ "_Add"), and
    # matches nodes_to_exclude against the rewritten graph: a Gemm's own name excluded nothing.
    skip = [n for name in (exclude or []) for n in (name, f"{name}_MatMul")]

    def run(model: Path) -> None:
        # The quantizer logs a generic "consider pre-processing" on the root logger.
        with quiet(), _own_name(model) as given:
            # DefaultTensorType: the fused contrib ops have no type inference in the quantizer (FACTS.md).
            quantize_dynamic(str(given), str(dest), per_channel=per_channel, weight_type=QuantType.QInt8,
                             reduce_range=reduce_range, nodes_to_exclude=skip,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})

    try:
        run(src)
    except InferenceError as first:
        # The quantizer's strict shape inference can disagree with the shapes the exporter wrote
        # (torch's dynamo exporter records the example's size of a reshaped nn.TransformerEncoder
        # tensor: "(32) vs (2)"); the graph itself runs. Without those recorded shapes the
        # quantizer infers its own. Only then: a fused graph's contrib ops need the recorded ones.
        model = onnx.load(str(src))
        del model.graph.value_info[:]
        bare = dest.with_name(f".{dest.stem}.no-value-info.onnx")
        onnx.save(model, str(bare))
        try:
            run(bare)
        except Exception:
            raise first from None  # the shapes' dispute is the more telling error
        finally:
            bare.unlink(missing_ok=True)
    return {"method": "dynamic", "per_channel": per_channel, "weights": "int8 (7-bit range)" if reduce_range else "int8", "activations": "uint8 (per call)",
            "float_nodes": list(exclude or [])}


@contextlib.contextmanager
def _own_name(model: Path) -> Iterator[Path]:
    """``model`` under a name of this process's own, beside it (a hard link: nothing is copied).
    ONNX Runtime's quantizer writes its shape-inferred graph beside the graph it is given, as
    ``<stem>-inferred.onnx``: given a package's own file, that landed in the package, under one name
    for every process (two quantize runs at once read or deleted each other's), and stayed there
    for good when the run was killed or the disk was full (review). Here both names carry
    ``_TMP_MARK`` and this process id, which the next run's clean-up (remove_stale_files) knows."""
    link = model.with_name(f"{model.stem}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:6]}.onnx")
    try:
        os.link(model, link)
    except OSError:  # a file system without hard links: the graph as given, as before
        link = None
    if link is None:  # yielded outside the except: a quantizer error is not shown as caused by the link's
        yield model
        return
    try:
        yield link
    finally:
        for done in (link, link.with_name(f"{link.stem}-inferred.onnx")):
            done.unlink(missing_ok=True)


class Dynamic(Step):
    name = "dynamic"
    variant = "int8"

    def source(self, pkg: Package, ctx: Context) -> str:
        from .fuse_decoder import decoder_source

        return decoder_source(pkg)  # the fused decoder of a generation package, else fp32

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        from edgeai.machine import int8_saturates

        # 7-bit weights where this CPU's kernel would saturate 8-bit ones (AVX2 without VNNI, an AMD EPYC Zen 3:
        # a 16-input linear layer measured cosine min 0.956 against fp32 with 8-bit, 0.9999 with 7-bit).
        narrow = int8_saturates()
        ctx.say("quantizing weights to INT8 (dynamic" + (", 7-bit: this CPU's INT8 kernel saturates 8-bit weights)" if narrow else ")"))
        return dynamic_int8(src, dest, ctx.per_channel, reduce_range=narrow)
