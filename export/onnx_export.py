"""``torch.onnx.export`` with edgeai's defaults and its errors turned into one sentence."""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

from edgeai.errors import ExportError, shown


def _value_traces(caught: list) -> list[str]:
    """The tracer's "might cause the trace to be incorrect" warnings raised in the user's own
    code ("net.py:9"): a Python ``if`` or ``.item()`` on a tensor, which the trace freezes to the
    example's branch. Library files (torch, transformers: in site-packages) do this on purpose
    for shape checks and are left out."""
    import sysconfig

    libraries = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    libraries.add(str(Path(__file__).resolve().parent))  # the built-in families' own modules
    found: list[str] = []
    for w in caught:
        where = f"{Path(w.filename).name}:{w.lineno}"
        if (w.category.__name__ == "TracerWarning" and "trace to be incorrect" in str(w.message)
                and not any(str(w.filename).startswith(lib) for lib in libraries) and where not in found):
            found.append(where)
    return found


@contextmanager
def _native_stderr_dropped():
    """File descriptor 2 sent to a scratch file: torch's C++ side writes its ONNX log there (see
    to_onnx: "Torch IR graph at exception: ..." when an op has no ONNX form), past Python's
    sys.stderr. The failure itself still raises and is said in one sentence."""
    import os
    import tempfile

    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a windowed program): nothing to silence
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


@contextmanager
def _quiet(caught: list | None = None):
    """The exporters' chatter silenced at its sources: Python warnings (tracer, deprecation;
    recorded into ``caught`` when given), prints to stdout (the dynamo exporter's progress) and to
    stderr (its dump of a graph it cannot export, for data-dependent control flow), and log
    records, which torch's own handlers write to stderr (e.g. "torchvision is not installed.
    Skipping torchvision::nms" from torch.onnx's op registry). A failure still raises, and
    becomes one sentence."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as seen, redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), \
                _native_stderr_dropped():
            warnings.simplefilter("always")
            yield
            if caught is not None:
                caught.extend(seen)
    finally:
        logging.disable(before)


def to_onnx(module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict, opset: int) -> list[str]:
    """Export with the TorchScript exporter; returns where the user's code made the trace follow
    the example's values (see ``_value_traces``).

    FACTS.md: both exporters match PyTorch on these models, but the dynamo exporter can
    specialise a dynamic batch axis to the example's size and leaves LSTM weights as run-time
    computations; the TorchScript exporter folds constants and keeps named dynamic axes.
    """
    import torch

    caught: list = []
    try:  # torch's ONNX log (the traced graph, printed when an op has no ONNX form) goes to stdout by
        torch._C._jit_set_onnx_log_output_stream("stderr")  # default, past sys.stdout: send it where _quiet drops it
    except (AttributeError, RuntimeError):
        pass
    try:
        with _quiet(caught):
            torch.onnx.export(
                module, args, str(path), input_names=input_names, output_names=output_names,
                dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False,
            )
    except Exception as e:  # torch raises many types (OnnxExporterError, RuntimeError, TypeError...)
        _reraise_interrupt(e)
        if isinstance(e, OSError) and e.strerror:  # a full or read-only disk: not the tracing's fault
            raise ExportError(f"torch.onnx.export could not write the graph into {shown(path.parent)}: {e.strerror}.") from None
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        # The exporter often appends the whole traced graph; the sentence that matters names the op.
        key = next((ln for ln in lines if "not supported" in ln or "Exporting the operator" in ln), lines[0])
        at = ", ".join(f"{n} {list(a.shape)}" for n, a in zip(input_names, args) if hasattr(a, "shape"))
        if key == lines[0] and (rnn := _packed_rnn(module, args)):  # torch's own text is a C++ range check
            key = (f"the module's {rnn} takes a PackedSequence (pack_padded_sequence), which the exporter handles only when the "
                   f"{rnn}'s output is unpacked by pad_packed_sequence and used: take what you need (e.g. each row's step at "
                   "lengths - 1) from that padded output, not from the final state alone")
        raise ExportError(f"torch.onnx.export failed (tracing at {at}): {key[:300].rstrip('.')}.") from None
    return _value_traces(caught)


def _packed_rnn(module, args: tuple) -> str | None:
    """The class name of an RNN submodule that the module feeds a PackedSequence, else None."""
    import torch

    seen: list[str] = []

    def hook(rnn, inputs):
        if inputs and isinstance(inputs[0], torch.nn.utils.rnn.PackedSequence):
            seen.append(type(rnn).__name__)

    handles = [m.register_forward_pre_hook(hook) for m in module.modules() if isinstance(m, torch.nn.RNNBase)]
    try:
        with torch.inference_mode():
            module(*args)
    except Exception:
        pass
    finally:
        for h in handles:
            h.remove()
    return seen[0] if seen else None


def to_onnx_dynamo(module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                   dynamic: dict[str, dict[int, str]], opset: int) -> None:
    """Export with the dynamo exporter (torch.export), for graphs the TorchScript tracer freezes.

    Measured on nn.TransformerEncoder: the TorchScript trace of nn.MultiheadAttention bakes the
    batch size into a Reshape, while torch.export keeps it symbolic. Axes sharing a label share
    one ``torch.export.Dim``.
    """
    import inspect

    import torch

    dims: dict[str, object] = {}
    shapes = {}
    for name in input_names:
        shapes[name] = {axis: dims.setdefault(label, torch.export.Dim(label)) for axis, label in dynamic.get(name, {}).items()} or None
    dynamic_shapes = tuple(shapes[n] for n in input_names)
    params = list(inspect.signature(module.forward).parameters.values())
    if len(params) == 1 and params[0].kind == inspect.Parameter.VAR_POSITIONAL:
        dynamic_shapes = (dynamic_shapes,)  # forward(*args) (custom.py's wrapper): torch.export sees one tuple
    try:
        with _quiet():
            program = torch.onnx.export(module, args, None, input_names=input_names, output_names=output_names,
                                        dynamic_shapes=dynamic_shapes, opset_version=opset,
                                        dynamo=True, optimize=True, verbose=False)
            program.save(str(path))
    except Exception as e:
        _reraise_interrupt(e)
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        raise ExportError(f"torch.onnx.export (dynamo) failed: {lines[0][:300]}") from None


def _reraise_interrupt(e: BaseException) -> None:
    """Ctrl-C inside torch.export arrives wrapped in torch's own error types (an Exception): raise it
    as the interrupt it was, not as an export failure (review: "The ONNX export fails at ...")."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        seen.add(id(e))
        e = e.__cause__ or e.__context__


def name_output_axes(path: Path, inputs: list[dict], outputs: list[dict], seen: list[tuple[dict, dict]]) -> None:
    """Rename the output axes that the exporter named itself (``Concatoutput_1_dim_1``). Each one
    takes the name of the input axis it follows in every validation run (``seen``: per run, the
    input shapes fed and the output shapes got), and the new name is written both in ``outputs``
    (the specs) and in the graph file.

    Such an axis is most often the batch. Without its name, a sequence-first output (an LSTM's
    ``h``, ``[layers, batch, hidden]``) was compared as if its first axis held the samples
    (quantize.runner.batch_first), and ``inspect`` showed the exporter's name. An axis whose
    size matches no input axis, or more than one, keeps its name."""
    import onnx

    labels = {d for spec in inputs for d in spec["shape"] if isinstance(d, str)}
    auto = [(o, a) for o in outputs for a, d in enumerate(o["shape"]) if isinstance(d, str) and d not in labels]
    if not auto or len(seen) < 2:
        return
    sizes = [{d: fed[s["name"]][a] for s in inputs if s["name"] in fed for a, d in enumerate(s["shape"]) if isinstance(d, str)}
             for fed, _ in seen]
    shapes = [got for _, got in seen]
    renamed = {}
    for o, axis in auto:
        got = [shape[o["name"]][axis] for shape in shapes]
        match = [d for d in labels if len(set(got)) > 1 and all(s.get(d) == v for s, v in zip(sizes, got))]
        if len(match) == 1:  # the one input axis it follows, as it grows
            renamed[(o["name"], axis)] = o["shape"][axis] = match[0]
    if renamed:
        model = onnx.load(str(path), load_external_data=False)
        for v in model.graph.output:
            for axis, dim in enumerate(v.type.tensor_type.shape.dim):
                if (v.name, axis) in renamed:
                    dim.dim_param = renamed[(v.name, axis)]
        onnx.save(model, str(path))
