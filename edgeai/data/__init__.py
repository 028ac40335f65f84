"""The torch-free layer that the runtime, ``edgeai.export`` and ``edgeai.quantize`` share.

- :mod:`.dtypes`: the one table of tensor element types (manifest name, numpy, ONNX, OrtValue);
- :mod:`.feeds`: model inputs: seeded random feeds, arrays from ``.npy``/``.npz`` files,
  photos and texts run through a package's own preprocessing;
- :mod:`.compare`: output agreement between two runs (max/mean difference, top-1, cosine),
  each agreement figure with its sample count and 95% interval;
- :mod:`.photos`, :mod:`.texts`: the held-out and calibration sets (real photos that installed
  packages ship; sentences written for this project);
- :mod:`.photo_set` (with :mod:`.rcc`): the held-out photo set from Debian packages and its
  installer, ``python -m edgeai.data.photo_set install``.

Also the package data directory (``imagenet_classes.txt``, ``heldout_photos.tsv``).
"""
