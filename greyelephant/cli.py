"""The `greyelephant` command tree. Client commands import nothing heavy; `serve` and
`prepare-model` import vLLM / transformers only when run."""

from __future__ import annotations

import argparse
import sys


def _prepare_model(args) -> int:
    from greyelephant.server.model_store import prepare_embedded_model, verify_model_dir

    prepared = prepare_embedded_model(force=args.force)
    problems = verify_model_dir(prepared.path, deep=args.verify)
    state = "converted" if prepared.converted else "already prepared"
    print(f"{prepared.path} ({state}{', verified' if not problems else ''})")
    for p in problems:
        print("problem:", p, file=sys.stderr)
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greyelephant",
        description="OpenAI-compatible LLM server with per-request steering "
                    "(avoid / prefer entities), and its client tools.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("serve", add_help=False,
                   help="run the server (see 'greyelephant serve --help' for every flag)")
    prep = sub.add_parser("prepare-model",
                          help="convert the embedded SmolLM2 GGUF to safetensors (idempotent)")
    prep.add_argument("--force", action="store_true", help="convert again even if present")
    prep.add_argument("--verify", action="store_true", help="re-hash every file")
    prep.set_defaults(func=_prepare_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        from greyelephant.server.cli import serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)
