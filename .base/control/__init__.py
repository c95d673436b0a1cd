"""Steering: spec parsing, surface forms, the mention detector, directive prompts, the
string-level ban automaton and its vLLM logits processor. See docs/steering.md.

Importing this package pulls in neither numpy, torch nor vLLM; the ban automaton
(:mod:`.ban_automaton`), the batch state (:mod:`.steering_batch`) and the vLLM adapter
(:mod:`.logits_processor`) are imported where they are used.
"""

from .detector import Detector, Span, detector_for, find_mentions
from .directive import (
    DirectiveTemplates,
    apply_directive,
    apply_directive_prompt,
    build_directive,
)
from .normalize import fold_text, normalize_text
from .spec import (
    DEFAULT_POLICY,
    SteeringPolicy,
    SteeringPolicyError,
    SteeringSpec,
    parse_steering,
)
from .surface_forms import expand_entity

LOGITS_PROCESSOR = "greyelephant.control.logits_processor:SteeringLogitsProcessor"

__all__ = [
    "DEFAULT_POLICY",
    "LOGITS_PROCESSOR",
    "Detector",
    "DirectiveTemplates",
    "Span",
    "SteeringPolicy",
    "SteeringPolicyError",
    "SteeringSpec",
    "apply_directive",
    "apply_directive_prompt",
    "build_directive",
    "detector_for",
    "expand_entity",
    "find_mentions",
    "fold_text",
    "normalize_text",
    "parse_steering",
]
