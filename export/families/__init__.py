"""The built-in families, one module each; each defines ``FAMILY`` and its lazy hooks.

They are registered through the ``edgeai.families`` entry points in pyproject.toml, the same
way a third-party package registers its own (see edgeai.families). Importing one of these
modules must not import torch: only the hooks do.
"""
