"""LoRA adapters served next to the base model: `model` in a request picks one.

Names are plain identifiers (letters, digits, ``._-``, up to 64 characters). Adapters
loaded at run time (``POST /v1/adapters/load``) must live inside one of the configured
adapter roots (``--adapter-root``; by default the shipped ``adapters/`` folder and the
cache's ``adapters/``): the path is resolved (symlinks and ``..`` included) before the
check, so a request can never point the server at an arbitrary directory."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import APIError


@dataclass
class Adapter:
    name: str
    path: str
    lora_int_id: int
    created: int = field(default_factory=lambda: int(time.time()))

    def lora_request(self, base_model: str):
        from vllm.lora.request import LoRARequest

        return LoRARequest(self.name, self.lora_int_id, self.path, base_model_name=base_model)


def parse_adapter_spec(spec: str) -> tuple[str, str]:
    """'name=path' → (name, path)."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"adapter spec {spec!r} must look like name=path")
    return name.strip(), path.strip()


def check_adapter_dir(path: str) -> None:
    p = Path(path)
    if not (p / "adapter_config.json").is_file():
        raise APIError(400, f"{path} is not a PEFT adapter directory (no adapter_config.json)", "path")
    try:
        json.loads((p / "adapter_config.json").read_text())
    except ValueError as exc:
        raise APIError(400, f"{path}/adapter_config.json is not valid JSON: {exc}", "path") from exc


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_adapter_name(name: str) -> None:
    if not NAME.match(name):
        raise APIError(400, "an adapter name is 1-64 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit", "name")


def check_inside_roots(path: str, roots: tuple[str, ...]) -> None:
    """``path`` (resolved) must be inside one of ``roots`` (resolved)."""
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base + os.sep):
            return
    raise APIError(400, "the adapter path is outside the server's adapter roots "
                        f"({', '.join(roots) or 'none configured'}; see --adapter-root)", "path")


class AdapterRegistry:
    def __init__(self):
        self._by_name: dict[str, Adapter] = {}
        self._ids = itertools.count(1)

    def add(self, name: str, path: str, roots: tuple[str, ...] | None = None) -> Adapter:
        """Register an adapter; ``roots`` (run-time loads) confine where it may live."""
        check_adapter_name(name)
        if name in self._by_name:
            raise APIError(400, f"adapter {name!r} is already loaded", "name")
        if roots is not None:
            check_inside_roots(path, roots)
        check_adapter_dir(path)
        adapter = Adapter(name, str(Path(path).resolve()), next(self._ids))
        self._by_name[name] = adapter
        return adapter

    def remove(self, name: str) -> Adapter:
        try:
            return self._by_name.pop(name)
        except KeyError:
            raise APIError(404, f"adapter {name!r} is not loaded", "name", "model_not_found") from None

    def get(self, name: str) -> Adapter | None:
        return self._by_name.get(name)

    def __iter__(self):
        return iter(list(self._by_name.values()))
