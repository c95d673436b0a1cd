"""Make ``greyelephant.kernels`` importable from a bare checkout (no pip install):
the repo root's ``greyelephant/`` package gets the repo root appended to its __path__,
so ``greyelephant.kernels`` resolves to ``./kernels``."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ensure_importable() -> None:
    try:
        import greyelephant.kernels  # noqa: F401

        return
    except ImportError:
        pass
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import greyelephant

    if str(ROOT) not in list(greyelephant.__path__):
        greyelephant.__path__.append(str(ROOT))
    import greyelephant.kernels  # noqa: F401
