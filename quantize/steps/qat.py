"""``int8`` by a short quantization-aware fine-tune: the PyTorch model learns weights that survive
ONNX Runtime's static INT8, distilled from its own fp32 outputs on unlabeled photos.

Where post-training quantization misses the budget (EfficientNet-Lite0: benchmarks/results/
cnn-int8-ptq.md), the weights themselves have to move onto the 8-bit grid. The package's PyTorch
model (its family's ``reference`` hook) is fine-tuned with fake quantization placed and sized as
ONNX Runtime's QDQ quantizer will place and size it, then exported to ONNX and quantized by the
``static`` recipe (steps/static_qdq.py), so the shipped graph is the same kind as always.

Written here rather than with torch.ao's QAT because its fake quantization is not ONNX Runtime's
(measured: the default x86 QAT config starts at 0.46 top-1 agreement where ONNX Runtime's PTQ
gives 0.86): the grids must be identical, or the learned rounding is lost at export. What is
matched, from onnxruntime.quantization's ``compute_scale_zp``:

- weights: int8, symmetric, per output channel, scale = max|w| / 127, range [-127, 127];
- activations: uint8, MinMax calibrated on the same inputs as the static recipe (range widened
  to hold 0), at every input of a Conv/Linear, at both inputs and the output of every Add, at
  the input of average pooling and at a Linear's output (where the QDQ quantizer puts them);
- the first Conv stays float, as the static recipe keeps it.

Training: the fp32 model is the teacher (no labels), KL divergence of the softmax plus a small
logit MSE, Adam with a cosine schedule, batch-norm statistics frozen, on random crops and flips
of the calibration photos (or ``--calibration DIR``); held-out photos are never seen.
"""

from __future__ import annotations

import functools
import math
import random
from pathlib import Path

import numpy as np

from edgeai.data.feeds import calibration_feeds, input_kind
from edgeai.errors import DependencyError, InputError
from edgeai.package import Package

from ..runner import Context, Step
from .static_qdq import StaticQDQ

STEPS, BATCH, LR = 300, 16, 2e-5
RECALIBRATE = 50  # steps between re-measuring the activation ranges of the moving weights


class QuantizationAware(Step):
    name = "qat"
    variant = "int8"

    def requires(self, pkg: Package) -> None:
        from edgeai import families

        if input_kind(pkg) != "image":
            raise InputError("--method qat fine-tunes image models; use static or dynamic for this one.")
        family = families.families().get(pkg.manifest.get("family", ""))
        if family is None or not family.has_hook("reference"):
            raise InputError(f"--method qat needs the PyTorch model {pkg.name!r} was exported from; "
                             "this package's family cannot rebuild it.")
        if not family.fx_traceable:
            raise InputError(f"--method qat rewrites the PyTorch model with torch.fx, which cannot trace the {family.name} "
                             "family's models; use --method static.")

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        try:
            import torch
        except ImportError:
            raise DependencyError("--method qat fine-tunes in PyTorch: pip install 'edgeai[export]'.") from None
        from edgeai.export.reference import reference_module

        torch.manual_seed(0)
        teacher = reference_module(pkg)
        images = _training_images(ctx.calibration)
        cal = torch.from_numpy(np.concatenate([next(iter(f.values())) for f in calibration_feeds(pkg, ctx.calibration)]))
        base = reference_module(pkg)
        student, weighted = _fake_quantized(base)  # shares base's modules: training moves base's weights
        ctx.say(f"fine-tuning with ONNX Runtime's INT8 grid, distilled from fp32 on {len(images)} photos ({ctx.qat_steps} steps)")
        before = _calibrate(student, teacher, cal)
        after = _train(student, teacher, images, cal, pkg.manifest["preprocess"], ctx)
        for m in weighted:  # the trained float weights, without the fake quantization
            torch.nn.utils.parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        tuned = work / "qat-fp32.onnx"
        _export(base, pkg, src, tuned)
        recipe = StaticQDQ().run(pkg, tuned, dest, work, ctx)
        return {**recipe, "method": "qat", "qat": {
            "steps": ctx.qat_steps, "batch": BATCH, "lr": LR, "distilled_from": "fp32", "training_images": len(images),
            "trained_on": str(ctx.calibration) if ctx.calibration else "the package's calibration photos",
            # median over the calibration inputs of the largest |logit - fp32 logit|, fake-quantized
            "logit_error_before": round(before, 4), "logit_error_after": round(after, 4)}}


# -- fake quantization matched to ONNX Runtime's -----------------------------------------------------
@functools.cache  # defined once, on first use (torch is imported only by this recipe)
def _modules():
    import torch
    from torch import nn

    class WeightGrid(nn.Module):
        """ONNX Runtime's per-channel symmetric int8 weights (a parametrization of ``weight``)."""

        enabled = True  # off while the activation ranges are measured: ONNX Runtime calibrates the float graph

        def forward(self, w):
            if not WeightGrid.enabled:
                return w
            scale = (w.detach().abs().flatten(1).amax(1) / 127).clamp_min(1e-12)
            return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -127, 127)

    class ActivationGrid(nn.Module):
        """ONNX Runtime's uint8 MinMax activations: observes while ``observing``, then rounds."""

        def __init__(self):
            super().__init__()
            self.observing, self.lo, self.hi = True, 0.0, 0.0

        def forward(self, x):
            if self.observing:
                self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
                return x
            scale = max(self.hi - self.lo, 1e-8) / 255
            return torch.fake_quantize_per_tensor_affine(x, scale, int(round(-self.lo / scale)), 0, 255)

    return WeightGrid, ActivationGrid


def _fake_quantized(model):
    """``model`` traced (torch.fx) with ActivationGrid modules where ONNX Runtime's QDQ quantizer
    puts Q/DQ pairs, and WeightGrid on every Conv/Linear weight but the first conv's.
    Returns (graph module, the parametrized modules)."""
    import operator

    import torch
    from torch import fx, nn

    WeightGrid, ActivationGrid = _modules()
    weighted_types = (nn.Conv1d, nn.Conv2d, nn.Linear)

    class Tracer(fx.Tracer):  # convolution subclasses (static "same" padding) stay one call
        def is_leaf_module(self, m, name):
            return isinstance(m, weighted_types) or super().is_leaf_module(m, name)

    try:
        gm = fx.GraphModule(model, Tracer().trace(model))
    except Exception as e:  # torch.fx raises many kinds for data-dependent Python
        raise InputError(f"--method qat could not trace the PyTorch model with torch.fx ({type(e).__name__}); "
                         "use --method static.") from None
    graph, grids, done = gm.graph, [], {}

    def grid_on(value: fx.Node) -> fx.Node:
        """``value`` through a grid (one per tensor), for the node about to read it."""
        if value in done:
            return done[value]
        if value.op == "call_module" and str(value.target).startswith("edgeai_grid_"):
            return value  # already on the grid (an Add's output feeding a Conv)
        name = f"edgeai_grid_{len(grids)}"
        grids.append(ActivationGrid())
        gm.add_submodule(name, grids[-1])
        with graph.inserting_after(value):
            done[value] = graph.call_module(name, (value,))
        return done[value]

    def grid_output(node: fx.Node) -> None:
        """Every reader of ``node`` reads it through a grid."""
        users = list(node.users)
        out = grid_on(node)
        for u in users:
            u.replace_input_with(node, out)

    def is_weighted(n):
        return n.op == "call_module" and isinstance(gm.get_submodule(n.target), weighted_types)

    weighted, first = [], True
    pools = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)
    for node in list(graph.nodes):
        if is_weighted(node):
            module = gm.get_submodule(node.target)
            if first and isinstance(module, nn.Conv2d):  # the first conv stays float
                first = False
                continue
            first = False
            torch.nn.utils.parametrize.register_parametrization(module, "weight", WeightGrid())
            weighted.append(module)
            node.args = (grid_on(node.args[0]), *node.args[1:])
        elif node.op == "call_module" and isinstance(gm.get_submodule(node.target), pools):
            node.args = (grid_on(node.args[0]), *node.args[1:])
        elif (node.op == "call_function" and node.target in (operator.add, torch.add)) or \
                (node.op == "call_method" and node.target == "add"):
            if sum(isinstance(a, fx.Node) for a in node.args[:2]) == 2:  # tensor + tensor, not a bias constant
                node.args = tuple(grid_on(a) if isinstance(a, fx.Node) else a for a in node.args)
                grid_output(node)
    result = next(n for n in graph.nodes if n.op == "output").args[0]
    if isinstance(result, fx.Node) and is_weighted(result):  # a classifier's logits (Gemm output)
        grid_output(result)
    graph.lint()
    gm.recompile()
    return gm.eval(), weighted


def _grids(student):
    _, ActivationGrid = _modules()
    return [m for m in student.modules() if isinstance(m, ActivationGrid)]


def _calibrate(student, teacher, cal) -> float:
    """Measure the activation ranges in float on the calibration inputs (as ONNX Runtime's MinMax
    does), then the median largest logit error of the fake-quantized model there."""
    import torch

    WeightGrid, _ = _modules()
    grids = _grids(student)
    for g in grids:
        g.observing, g.lo, g.hi = True, 0.0, 0.0
    student.eval()
    WeightGrid.enabled = False
    try:
        with torch.no_grad():
            for i in range(0, len(cal), 32):
                student(cal[i : i + 32])
    finally:
        WeightGrid.enabled = True
    with torch.no_grad():
        for g in grids:
            g.observing = False
        errors = [(student(cal[i : i + 32]) - teacher(cal[i : i + 32])).abs().amax(-1) for i in range(0, len(cal), 32)]
    return float(torch.cat(errors).median())


def _train(student, teacher, images, cal, preprocess: dict, ctx: Context) -> float:
    import torch
    import torch.nn.functional as F

    from edgeai.preprocess import ImagePreprocessor

    pre = ImagePreprocessor(preprocess)
    size = tuple(preprocess.get("crop") or (224, 224))
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=LR)
    rng = random.Random(0)
    error = 0.0
    for step in range(1, ctx.qat_steps + 1):
        student.eval()  # batch-norm statistics and dropout frozen; the weights still learn
        x = torch.from_numpy(np.stack([pre.normalize(_crop(images[rng.randrange(len(images))], size, rng))
                                       for _ in range(BATCH)]))
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        loss = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean") + 0.1 * F.mse_loss(s, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = LR * 0.5 * (1 + math.cos(math.pi * step / ctx.qat_steps))
        if step % RECALIBRATE == 0 or step == ctx.qat_steps:
            error = _calibrate(student, teacher, cal)
            ctx.say(f"fine-tuning: step {step}/{ctx.qat_steps}, median largest logit error {error:.3f}")
    return error


def _crop(im, size: tuple[int, int], rng: random.Random):
    """A random crop (15-100% of the area, aspect 3:4 to 4:3) resized to ``size``, flipped half the time."""
    from PIL import Image

    w, h = im.size
    for _ in range(10):
        area, aspect = w * h * rng.uniform(0.15, 1.0), math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if cw <= w and ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            break
    else:
        cw = ch = min(w, h)
        left, top = (w - cw) // 2, (h - ch) // 2
    out = im.crop((left, top, left + cw, top + ch)).resize((size[1], size[0]), Image.BICUBIC)
    return out.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


def _training_images(folder) -> list:
    """The photos to distil on, as RGB images at most 640 pixels on a side."""
    from edgeai.data.feeds import calibration_image_paths
    from edgeai.data.photos import CALIBRATION, photos
    from edgeai.preprocess import open_image

    paths = calibration_image_paths(folder) if folder is not None else list(photos(CALIBRATION))
    images = []
    for p in paths:
        im = open_image(p).convert("RGB")
        im.thumbnail((640, 640))
        images.append(im)
    if not images:
        raise InputError("--method qat needs photos to fine-tune on: pass --calibration DIR.")
    return images


def _export(model, pkg: Package, src: Path, path: Path) -> None:
    """The fine-tuned model to ONNX, with the fp32 graph's input and output names, dynamic axes
    and opset."""
    import onnx
    import torch

    from edgeai.export.onnx_export import to_onnx

    graph = onnx.load(str(src), load_external_data=False)
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    ins, outs = pkg.manifest["inputs"], pkg.manifest["outputs"]
    dynamic = {s["name"]: {i: d for i, d in enumerate(s["shape"]) if isinstance(d, str)} for s in (*ins, *outs)}
    example = tuple(torch.zeros([2 if isinstance(d, str) else d for d in s["shape"]]) for s in ins)
    to_onnx(model.eval(), example, path, [s["name"] for s in ins], [s["name"] for s in outs],
            {k: v for k, v in dynamic.items() if v}, opset)
