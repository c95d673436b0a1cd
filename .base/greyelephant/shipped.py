"""The adapters shipped with the project and where run-time adapter loads may read from.

The shipped adapters live in the repository's ``adapters/`` folder, installed as the
``greyelephant.adapters`` package (so a non-editable install and the Docker image find
them too). Each directory with an ``adapter_config.json`` is one adapter, served under the
directory's name. Its ``recipe.json`` may carry ``steering_defaults``: the steering policy
a request for that adapter gets when its ``steering`` object leaves fields out (the
adapter was trained to follow the directive, so choosing it should give that behaviour).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greyelephant.model_store import cache_root


@dataclass(frozen=True)
class ShippedAdapter:
    name: str
    path: str
    steering_defaults: dict[str, Any] = field(default_factory=dict)


def shipped_root() -> Path:
    import greyelephant.adapters as package

    return Path(package.__file__).resolve().parent


def shipped_adapters() -> list[ShippedAdapter]:
    out = []
    for d in sorted(shipped_root().iterdir()):
        if (d / "adapter_config.json").is_file():
            recipe = d / "recipe.json"
            defaults = {}
            if recipe.is_file():
                defaults = json.loads(recipe.read_text()).get("steering_defaults") or {}
            out.append(ShippedAdapter(d.name, str(d), defaults))
    return out


def default_adapter_roots() -> tuple[str, ...]:
    """The shipped adapters and the cache's ``adapters/`` directory."""
    return (str(shipped_root()), str(cache_root() / "adapters"))
