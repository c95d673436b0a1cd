"""Kernel tests run the Triton kernels on the CPU through Triton's interpreter.

TRITON_INTERPRET must be set before any @triton.jit function is defined; the kernel
package imports its Triton modules lazily, so setting it here (at collection of this
directory, before the test modules import them) is enough.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
