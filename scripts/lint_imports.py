"""Check the import contracts of `.importlinter` against the real source tree.

The folders are one import namespace through setuptools' `package-dir` mapping (server/
is `greyelephant.server`, …). import-linter finds `greyelephant` through the import system,
and in an editable install that is the `greyelephant/` folder alone, so it would read no
other module and every contract would pass. This script copies the mapped folders into a
temporary package tree, checks that the graph really holds the server, control, kernels,
client, recipe and benchmarks modules, and runs `lint-imports` there.

    python scripts/lint_imports.py              # the contracts (exit 1 on a violation)
    python scripts/lint_imports.py --self-test  # proves a wrong import is caught
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUST_SEE = ["greyelephant.server.app", "greyelephant.control.steering_batch",
            "greyelephant.kernels.logit_controls", "greyelephant.client",
            "greyelephant.recipe.dpo", "greyelephant.benchmarks.steering_eval"]
WRONG_IMPORT = ("control/detector.py", "import greyelephant.server.app  # deliberately wrong\n")


def build_tree(dest: Path) -> None:
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "data", "results", "*.jsonl")
    for package, folder in sorted(mapping.items()):  # "greyelephant" first
        shutil.copytree(REPO / folder, dest / package.replace(".", "/"), ignore=skip,
                        dirs_exist_ok=True)


def run(tree: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    check = ("import grimp, sys; g = grimp.build_graph('greyelephant'); "
             f"missing = [m for m in {MUST_SEE!r} if m not in g.modules]; "
             "print(f'import graph: {len(g.modules)} modules'); "
             "sys.exit(f'not in the graph: {missing}' if missing else 0)")
    subprocess.run([sys.executable, "-c", check], cwd=tree, env=env, check=True)
    lint = Path(sys.executable).with_name("lint-imports")
    cmd = [str(lint) if lint.exists() else "lint-imports", str(REPO / ".importlinter"),
           "--no-cache"]
    return subprocess.run(cmd, cwd=tree, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--self-test", action="store_true",
                    help="add a forbidden import (control -> server) and expect a failure")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        build_tree(tree)
        if args.self_test:
            rel, line = WRONG_IMPORT
            target = tree / "greyelephant" / rel
            target.write_text(line + target.read_text())
            code = run(tree)
            if code == 0:
                print("self-test FAILED: the contracts passed with a forbidden import")
                return 1
            print("self-test ok: the forbidden import control -> server was reported")
            return 0
        return run(tree)


if __name__ == "__main__":
    sys.exit(main())
