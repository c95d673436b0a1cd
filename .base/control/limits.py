"""Every documented limit of the steering extension, in one place (see docs/steering.md).

Requests beyond these are rejected with a clear message (HTTP 400)."""

MAX_ENTITIES_PER_LIST = 64  # entries in `avoid`, and in `prefer`
MAX_ALIASES_PER_ENTITY = 32
MAX_NAME_CHARS = 128  # one entity name or alias, after normalisation
MAX_REVISIONS = 4  # critique-revise rounds
# near misses of one entity banned as its aliases in a critique-revise revision
MAX_NEAR_MISS_ALIASES = 8
MAX_SURFACE_FORMS = 4096  # distinct folded surface forms, avoid + prefer, after expansion
DEFAULT_PREFER_BIAS = 4.0  # logits added to tokens that start/continue a preferred form
MAX_PREFER_BIAS = 10.0
PREFER_MIN_CHARS = 4  # a boosted token must leave >= this many chars of the form in place
MAX_PREFER_MISSES = 2  # the boost is spent after the row abandons this many boosted attempts
DEFAULT_NO_REPEAT_NGRAM = 4  # loop guard: no token 4-gram twice in a logits-steered output
MAX_NO_REPEAT_NGRAM = 32  # 0 = off; otherwise 2..32
MAX_ENGINE_FORM_CHARS = 512  # one form in extra_args["steering"] (engine-side check)
ENGINE_ARGS_VERSION = 2  # the typed engine form, control/engine_args.py
DEFAULT_MAX_ROLLBACKS = 8  # rollbacks per choice before the ban falls back to masking alone
MAX_ROLLBACKS = 32  # 0 = rollback off
ROLLBACK_MASS = 0.5  # sampling: banned probability mass at a step inside a form that rolls back
ROLLBACK_PREFER_FACTOR = 2.0  # the prefer bias at the position a rollback returned to (capped)
