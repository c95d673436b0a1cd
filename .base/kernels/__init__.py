"""Logit-processing ops: torch reference + Triton kernels + dispatch (Triton on CUDA,
vectorised torch on CPU). See docs/kernels.md.

Triton modules are imported lazily (only for CUDA tensors), so importing this package
needs neither a GPU nor a configured Triton.
"""

from .bitmask import bitmask_words, pack_token_bitmask, unpack_token_bitmask
from .logit_controls import apply_logit_controls
from .logit_controls_numpy import apply_flat_controls_numpy, apply_row_controls_numpy
from .sampling import sample_from_logits

__all__ = [
    "apply_logit_controls",
    "apply_flat_controls_numpy",
    "apply_row_controls_numpy",
    "sample_from_logits",
    "pack_token_bitmask",
    "unpack_token_bitmask",
    "bitmask_words",
]
