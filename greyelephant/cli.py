"""The `greyelephant` command tree.

Each command group registers itself through one small function ``register(sub)`` that
adds its subparsers and sets ``func`` (called with the parsed args; returns the exit
status). Registration must stay cheap: import heavy modules (vLLM, torch, transformers)
inside ``func``, never at module level, so that ``greyelephant --help`` and the client
commands stay light.

To add a command (``eval``, ``bench``, …): write ``def register(sub)`` in your module and
add it to :data:`COMMANDS`. Client-side options (``--base-url``, ``--api-key``, …) and a
ready client: :func:`greyelephant.client.cli.add_connection_args` and
:func:`greyelephant.client.cli.client_from_args`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

Registrar = Callable[[argparse._SubParsersAction], None]


def _prepare_model(args) -> int:
    from greyelephant.server.model_store import prepare_embedded_model, verify_model_dir

    prepared = prepare_embedded_model(force=args.force)
    problems = verify_model_dir(prepared.path, deep=args.verify)
    state = "converted" if prepared.converted else "already prepared"
    print(f"{prepared.path} ({state}{', verified' if not problems else ''})")
    for p in problems:
        print("problem:", p, file=sys.stderr)
    return 1 if problems else 0


def register_server_commands(sub: argparse._SubParsersAction) -> None:
    """``serve`` (its arguments go to the server's own parser, see :func:`main`) and
    ``prepare-model``."""
    sub.add_parser("serve", add_help=False,
                   help="run the server (see 'greyelephant serve --help' for every flag)")
    prep = sub.add_parser("prepare-model",
                          help="convert the embedded SmolLM2 GGUF to safetensors (idempotent)",
                          description="Convert the embedded SmolLM2-135M-Instruct GGUF into a "
                                      "safetensors model directory in the cache (once) and "
                                      "print its path.")
    prep.add_argument("--force", action="store_true", help="convert again even if present")
    prep.add_argument("--verify", action="store_true", help="re-hash every file")
    prep.set_defaults(func=_prepare_model)


def register_client_commands(sub: argparse._SubParsersAction) -> None:
    """``chat``, ``complete``, ``models`` (greyelephant.client.cli)."""
    from greyelephant.client.cli import register

    register(sub)


#: The command groups, in the order ``--help`` lists them.
COMMANDS: list[Registrar] = [register_server_commands, register_client_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greyelephant",
        description="OpenAI-compatible LLM server with per-request steering "
                    "(avoid / prefer entities), and its client tools.",
        epilog="Run 'greyelephant COMMAND --help' for a command's options. Client commands "
               "read GREYELEPHANT_BASE_URL and GREYELEPHANT_API_KEY as defaults.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


# Packages of the server extras: missing in a client-only install (`pip install greyelephant`).
_SERVER_PACKAGES = frozenset({"vllm", "torch", "transformers", "fastapi", "uvicorn", "gguf",
                              "prometheus_client", "msgspec", "safetensors", "accelerate"})


def _server_missing(exc: ModuleNotFoundError) -> int:
    print(f"greyelephant: error: this command needs the server install ({exc.name} is "
          "missing): scripts/install.sh, or pip install 'greyelephant[cpu]' / "
          "'greyelephant[gpu]'. The client commands (chat, complete, models) work without it.",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "serve":
            from greyelephant.server.cli import serve_main

            return serve_main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _SERVER_PACKAGES:
            return _server_missing(exc)
        raise
