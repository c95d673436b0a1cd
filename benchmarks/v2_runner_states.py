"""What the runner-V2 adapter (``control/logits_processor_v2.py``) reads of vLLM's runner
V2, as plain dataclasses for the benchmarks that drive it without the runner
(``v2_adapter_step.py``, ``step_overlap.py --runner v2``): the request states' buffers
(a ``.np`` host array, a ``.gpu`` device tensor, as vLLM's wrappers expose them) and the
per-step ``LogitsContext`` fields the adapter uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Host:
    np: np.ndarray


@dataclass
class Device:
    gpu: torch.Tensor


@dataclass
class RequestStates:
    """What the adapter reads of runner V2's request states."""

    device: torch.device
    max_num_reqs: int
    all_token_ids: Device
    prompt_len: Host
    prefill_len: Host
    total_len: Device


@dataclass
class StepContext:
    """What the adapter reads of runner V2's per-step ``LogitsContext``."""

    idx_mapping_np: np.ndarray
    input_ids: torch.Tensor
    pos: torch.Tensor
    seq_lens_upper_bound_np: np.ndarray | None = None  # (None: no host positions)
