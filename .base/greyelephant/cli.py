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
    from greyelephant.model_store import prepare_embedded_model, verify_model_dir

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


def _eval(args) -> int:
    from greyelephant.benchmarks.steering_eval import run

    return run(args)


def register_eval_command(sub: argparse._SubParsersAction) -> None:
    """``eval``: steering quality on an eval file (greyelephant.benchmarks.steering_eval)."""
    from greyelephant.benchmarks.steering_eval import DOC, add_arguments

    ev = sub.add_parser("eval", help="steering-quality eval: mention / prefer / degenerate rates",
                        description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ev)
    ev.set_defaults(func=_eval)


BENCHMARKS = {
    "load": ("greyelephant.benchmarks.load.run",
             "load test: scenario matrix (plain, directive, logits 1/30 names and 1,000 forms, "
             "rollback on/off, critique-revise, adapter, mixed) x concurrency / Poisson sweeps, "
             "vLLM's client + guidellm, side by side with vLLM's server; JSON, markdown, plots"),
    "quality": ("greyelephant.benchmarks.load.quality",
                "steering quality per strategy x model/adapter on eval files (DESIGN.md "
                "format): mention, near-miss, prefer, degenerate rates, latency"),
    "kernels": ("greyelephant.benchmarks.kernels",
                "kernel microbenchmarks: 'bench kernels SCRIPT [args]' runs "
                "benchmarks/kernels/SCRIPT.py (gpu_check, bench_logit_controls, "
                "bench_sampling)"),
    "serving": ("greyelephant.benchmarks.serving_baseline",
                "this server vs vLLM's own OpenAI server (throughput, TTFT, TPOT)"),
    "steering": ("greyelephant.benchmarks.steering_overhead",
                 "steered vs plain throughput; critique-revise latency on clean drafts"),
    "compile": ("greyelephant.benchmarks.steering_compile",
                "compiling a 1,000-form steering spec on the vocabulary"),
}
#: families whose ``main(argv)`` takes the arguments (the others read sys.argv)
_TAKES_ARGV = {"load", "quality"}
KERNEL_SCRIPTS = ("gpu_check", "bench_logit_controls", "bench_sampling")


def _bench_kernels(rest: list[str]) -> int:
    import subprocess
    from pathlib import Path

    import greyelephant.benchmarks as benchmarks

    folder = Path(benchmarks.__file__).resolve().parent / "kernels"
    if not rest or rest[0] in ("-h", "--help") or rest[0] not in KERNEL_SCRIPTS:
        print("usage: greyelephant bench kernels {" + ",".join(KERNEL_SCRIPTS) + "} [args]\n"
              f"Runs {folder}/SCRIPT.py with this Python (see docs/kernels.md); e.g. "
              "'greyelephant bench kernels gpu_check --smoke --out DIR' (TRITON_INTERPRET=1 "
              "on a CPU).", file=sys.stderr if rest and rest[0] not in ("-h", "--help")
              else sys.stdout)
        return 0 if rest and rest[0] in ("-h", "--help") else 2
    return subprocess.call([sys.executable, str(folder / f"{rest[0]}.py"), *rest[1:]],
                           cwd=str(folder))


def _bench(args) -> int:
    import importlib

    if args.which == "kernels":
        return _bench_kernels(args.rest)
    module = importlib.import_module(BENCHMARKS[args.which][0])
    if args.which in _TAKES_ARGV:
        return module.main(args.rest)
    sys.argv = [f"greyelephant bench {args.which}", *args.rest]
    status = module.main()
    return status if isinstance(status, int) else 0


def register_bench_command(sub: argparse._SubParsersAction) -> None:
    """``bench WHICH [args…]``: the benchmarks in benchmarks/ (results in benchmarks/results)."""
    bench = sub.add_parser(
        "bench", help="run a benchmark (load, quality, kernels, serving, steering, compile)",
        description="Run one of the project's benchmarks; arguments after WHICH go to it "
                    "(e.g. 'greyelephant bench load --preset small', 'greyelephant bench load "
                    "--help' for its scenarios). Results: benchmarks/results/ (docs/"
                    "benchmarks.md).",
        epilog="\n".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("which", choices=list(BENCHMARKS))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(func=_bench)


#: The command groups, in the order ``--help`` lists them.
COMMANDS: list[Registrar] = [register_server_commands, register_client_commands,
                             register_eval_command, register_bench_command]


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
