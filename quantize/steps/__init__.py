"""One recipe per module, each a :class:`edgeai.quantize.runner.Step` (``requires`` -> ``run``);
the runner does the rest. ``optimized``: optimize.py (any graph), fuse_transformer.py (BERT-style
encoders). ``int8``: static_qdq.py (ONNX Runtime CPU), tensorrt.py (symmetric QDQ), dynamic.py,
budget_search.py (dynamic within the package's budget, text models). ``fp16``: fp16.py. Shared
ONNX Runtime tooling: _ort.py."""
