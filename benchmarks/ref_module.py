"""One module of an older commit, loaded beside this checkout's for a same-run comparison,
and what such a comparison records of its run."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def git_rev(rev: str) -> str:
    """The full commit id of ``rev`` in this checkout."""
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", rev], capture_output=True,
                          text=True, check=True).stdout.strip()


def load_ref_module(ref: str, path: str, name: str) -> ModuleType:
    """The file ``path`` (from the checkout's root) of commit ``ref``, read with ``git
    show`` and imported as ``greyelephant.control.<name>`` (so its relative imports resolve
    to this checkout's package)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:{path}"],
                            capture_output=True, text=True, check=True).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(source)
    qualified = f"greyelephant.control.{name}"
    spec = importlib.util.spec_from_file_location(qualified, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


def run_meta(module: str, ref: str, head: str, argv: list[str] | None, workload: str
             ) -> dict:
    """A comparison's record of its run: date, machine, CPU, load, the two commits, the
    command (``python -m greyelephant.benchmarks.<module>`` and its arguments) and the
    workload."""
    from greyelephant.cpu_features import cpu_model

    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "cpu": cpu_model(), "load_average": os.getloadavg(), "ref": ref, "current": head,
            "command": f"python -m greyelephant.benchmarks.{module} " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "workload": workload}
