"""greyelephant: an OpenAI-compatible LLM server with per-request steering.

The package's subpackages live in the repository's top-level folders (server/, control/,
kernels/, client/, recipe/, benchmarks/), mapped into this namespace by pyproject.toml.
From a checkout's root, this folder shadows an installed copy of the package; extending
``__path__`` over every ``greyelephant`` directory on ``sys.path`` lets
``import greyelephant.client`` find the installed subpackages there too.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
