"""The scenario matrix of ``greyelephant bench load`` and its presets (pure: no server).

A scenario is one kind of traffic on one server: a workload (random-token prompts for raw
throughput, or the chat prompts of an eval file in the DESIGN.md format), a steering
configuration, and the concurrencies / Poisson rates it is driven at. The scenarios:

========================  =====================================================================
plain/random              no steering; vLLM's random dataset (input/output lengths of the
                          preset, ignore_eos), /v1/completions — raw throughput, swept over
                          concurrency {1, 4, 16, 64} and a Poisson rate up to saturation
logits-30/random          every request avoids 30 names (entities + aliases) with ``logits``;
                          random tokens never name them: the ban's bookkeeping cost alone
plain/chat                no steering; the eval file's chat prompts (each leads the model to
                          the entity its case avoids), /v1/chat/completions
directive/chat            ``directive``: each request avoids its own case's entity
logits-1/chat             ``logits``, 1 avoided name (the case's entity, no alias)
logits-30/chat            ``logits``, 30 names: the case's entity and aliases, then other
                          entities; rollback on (the server's default max_rollbacks)
logits-30-norollback/chat the same with ``max_rollbacks: 0`` (the ban masks only)
logits-1000/chat          ``logits``, 1,000 avoided surface forms: the case's entity, then
                          the eval files' entities and aliases (~170 names; each name
                          expands to plurals and possessives). 1,000 *names* would expand
                          to ~6,100 forms, past the API's limit of 4,096
critique-revise/chat      ``critique_revise`` on the same prompts: the drafts do name the
                          entity, so the revisions really run (counted from /metrics)
mixed/chat                one run mixing plain, directive, logits-30 and critique-revise
                          requests (a quarter each, interleaved)
adapter/chat              the shipped adapter grey-dpo (adapters/grey-dpo; served by default,
                          else with ``--adapter grey-dpo=adapters/grey-dpo``), no steering
greyelephant-like/random  greyelephant with its CPU engine flags spelled out and no adapter
                          (LoRA off): the like-for-like twin of vllm-like
vllm-defaults/random      vLLM's own OpenAI server at its defaults, vs plain/random
                          (greyelephant at its defaults): "defaults vs defaults"
vllm-like/random          vLLM's own OpenAI server with greyelephant's CPU engine flags, vs
                          greyelephant-like/random: "like-for-like"
========================  =====================================================================

Every chat-workload scenario is driven at the preset's chat concurrency; the throughput
ratios of the done-when targets come from rounds that alternate the steered scenario with
its plain twin on the same server.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

MAX_ENTITIES = 64  # control/limits.py MAX_ENTITIES_PER_LIST
MAX_NAMES_PER_ENTITY = 33  # the entity + MAX_ALIASES_PER_ENTITY (32)
CONCURRENCY_SWEEP = (1, 4, 16, 64)


@dataclass(frozen=True)
class Scenario:
    name: str  # "<steering>/<workload>", unique
    workload: str  # "random" | "chat"
    steering: str  # "plain" | "directive" | "logits" | "critique_revise" | "mixed"
    server: str = "greyelephant"  # key of servers.SERVERS
    names: int = 0  # avoided names (entities + aliases) for logits
    forms: int = 0  # or: avoided folded surface forms (what the ban automaton holds)
    max_rollbacks: int | None = None  # None: the server's default
    model: str | None = None  # adapter name; None: the base model
    concurrencies: tuple[int, ...] = (16,)
    poisson: bool = False  # also swept over Poisson rates (vLLM's client)
    guidellm: bool = False  # also swept by guidellm (Poisson up to saturation)
    baseline: str | None = None  # the plain twin its throughput ratio is taken against
    rounds: int = 1  # rounds of the headline ratios: > 1 runs a chain twin, this, twin, …
    description: str = ""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    input_len: int = 128  # random workload
    output_len: int = 64  # random workload
    chat_output_len: int = 96
    chat_concurrency: int = 16
    min_prompts: int = 8
    prompts_per_stream: int = 2  # prompts per concurrent stream in a run
    max_prompts: int = 64
    chat_prompts: int = 32
    rounds: int = 1  # for the headline steered/plain pairs
    sweep_servers: tuple[str, ...] = ("greyelephant", "greyelephant-like", "vllm-like")
    poisson_fractions: tuple[float, ...] = (0.5, 1.0, 1.5)  # x the measured saturation rate
    poisson_prompts: int = 32
    guidellm_sweep_size: int = 4
    guidellm_seconds: float = 30.0
    guidellm_scenarios: tuple[str, ...] = ("plain/random",)
    adapter: bool = True
    quality_files: tuple[str, ...] = ("pink_elephant_dev.jsonl",)
    quality_rows: str = "none,directive,logits,critique_revise"
    quality_max_tokens: int = 96
    quality_concurrency: int = 16
    extra: dict = field(default_factory=dict)

    def prompts_for(self, concurrency: int) -> int:
        return max(self.min_prompts, min(self.max_prompts,
                                         self.prompts_per_stream * concurrency))


PRESETS: dict[str, Preset] = {
    "small": Preset(
        "small", "about 15-20 minutes on 2 CPU cores: every scenario once, short runs; "
                 "the concurrency sweep on greyelephant only",
        chat_output_len=64, chat_prompts=24, sweep_servers=("greyelephant",),
        poisson_fractions=(0.5, 1.0), guidellm_sweep_size=3, guidellm_seconds=60.0),
    "full": Preset(
        "full", "30 min to an hour on 2 CPU cores: longer runs, 12 rounds for the headline "
                "steered/plain ratios and 3 for logits-1000 (a chain, back to back: plain "
                "twin, steered, plain twin, steered, ..., plain twin), every server swept "
                "over concurrency, Poisson sweeps with both load generators",
        min_prompts=12, prompts_per_stream=3, max_prompts=128, chat_prompts=48, rounds=12,
        poisson_fractions=(0.5, 0.75, 1.0, 1.25), poisson_prompts=32,
        guidellm_sweep_size=4, guidellm_seconds=60.0,
        guidellm_scenarios=("plain/random", "vllm-like/random"),
        sweep_servers=("greyelephant", "greyelephant-like", "vllm-defaults", "vllm-like"),
        quality_files=("pink_elephant_dev.jsonl", "heldout_entities.jsonl"),
        quality_rows="none,directive,logits,critique_revise,directive+logits",
        quality_max_tokens=96),
    # the harness's own check (a few minutes): every code path (2 rounds: the sandwiches),
    # tiny runs, numbers meaningless
    "smoke": Preset(
        "smoke", "a few minutes: tests the harness itself; the numbers mean nothing",
        output_len=16, chat_output_len=24, min_prompts=4, prompts_per_stream=1,
        max_prompts=8, chat_prompts=8, poisson_fractions=(1.0,), poisson_prompts=6, rounds=2,
        guidellm_sweep_size=3, guidellm_seconds=20.0,
        quality_rows="none,logits", quality_max_tokens=32),
}


def build_matrix(preset: Preset) -> list[Scenario]:
    """The scenarios of a preset, in the order they run (grouped by server)."""
    sweep = CONCURRENCY_SWEEP
    c = preset.chat_concurrency
    rounds = preset.rounds
    gl = set(preset.guidellm_scenarios)
    m = [
        Scenario("plain/random", "random", "plain", concurrencies=sweep, poisson=True,
                 guidellm="plain/random" in gl,
                 description="no steering, random tokens"),
        Scenario("logits-30/random", "random", "logits", names=30, concurrencies=(c,),
                 baseline="plain/random", rounds=rounds, guidellm="logits-30/random" in gl,
                 description="30 avoided names, random tokens (no ban ever fires)"),
        Scenario("plain/chat", "chat", "plain", concurrencies=(c,),
                 description="no steering, eval chat prompts"),
        Scenario("directive/chat", "chat", "directive", concurrencies=(c,),
                 baseline="plain/chat", description="directive, the case's own entity"),
        Scenario("logits-1/chat", "chat", "logits", names=1, concurrencies=(c,),
                 baseline="plain/chat", description="logits, 1 avoided name"),
        Scenario("logits-30/chat", "chat", "logits", names=30, concurrencies=(c,),
                 baseline="plain/chat", rounds=rounds,
                 description="logits, 30 avoided names, rollback on (default)"),
        Scenario("logits-30-norollback/chat", "chat", "logits", names=30, max_rollbacks=0,
                 concurrencies=(c,), baseline="plain/chat",
                 description="logits, 30 avoided names, max_rollbacks 0 (mask only)"),
        # paired rounds too (up to 3): on 2 cores a one-round ratio is good to about ±0.2
        Scenario("logits-1000/chat", "chat", "logits", forms=1000, concurrencies=(c,),
                 baseline="plain/chat", rounds=min(rounds, 3),
                 description="logits, 1,000 avoided surface forms (~170 names)"),
        Scenario("critique-revise/chat", "chat", "critique_revise", concurrencies=(c,),
                 baseline="plain/chat",
                 description="critique_revise on drafts that name the entity"),
        Scenario("mixed/chat", "chat", "mixed", concurrencies=(c,), baseline="plain/chat",
                 description="plain + directive + logits-30 + critique-revise, interleaved"),
    ]
    if preset.adapter:
        m.append(Scenario("adapter/chat", "chat", "plain", model="grey-dpo", concurrencies=(c,),
                          baseline="plain/chat",
                          description="the grey-dpo adapter, no steering (same server)"))
    m.append(Scenario("greyelephant-like/random", "random", "plain", server="greyelephant-like",
                      concurrencies=sweep if "greyelephant-like" in preset.sweep_servers
                      else (c,), guidellm="greyelephant-like/random" in gl,
                      baseline="plain/random",
                      description="greyelephant like-for-like (no adapter, flags spelled out)"))
    for server in ("vllm-defaults", "vllm-like"):
        twin = "plain/random" if server == "vllm-defaults" else "greyelephant-like/random"
        m.append(Scenario(f"{server}/random", "random", "plain", server=server,
                          concurrencies=sweep if server in preset.sweep_servers else (c,),
                          guidellm=f"{server}/random" in gl, baseline=twin,
                          description=f"vLLM's own OpenAI server ({server}), random tokens"))
    return m


def select(matrix: list[Scenario], patterns: list[str] | None) -> list[Scenario]:
    """Scenarios whose name contains one of ``patterns`` (all when none), plus the
    baselines they are compared with."""
    if not patterns:
        return list(matrix)
    by_name = {s.name: s for s in matrix}
    chosen = {s.name for s in matrix if any(p in s.name for p in patterns)}
    unknown = [p for p in patterns if not any(p in s.name for s in matrix)]
    if unknown:
        raise ValueError(f"no scenario matches {unknown}; scenarios: {sorted(by_name)}")
    for name in list(chosen):
        base = by_name[name].baseline
        if base:
            chosen.add(base)
    return [s for s in matrix if s.name in chosen]


def server_order(matrix: list[Scenario]) -> list[str]:
    seen: list[str] = []
    for s in matrix:
        if s.server not in seen:
            seen.append(s.server)
    return seen


# ---------------------------------------------------------------------------------------
# Prompts and steering bodies

def load_cases(path: Path) -> list[dict]:
    cases = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for c in cases:
        c.setdefault("avoid_aliases", [])
    return cases


_SYLLABLES = ("ka", "lo", "ven", "dra", "mi", "tor", "quel", "sa", "bri", "nox", "ul", "ther",
              "zan", "pe", "gor", "ith", "mar", "ello", "vask", "rin", "oda", "fen", "cal",
              "yss")


def synthetic_names(n: int, seed: int = 0) -> list[str]:
    """n distinct made-up two-word names (deterministic), for padding big avoid lists."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
                 for _ in range(2)]
        name = " ".join(words)
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return out


def name_pool(case_files: list[Path]) -> list[tuple[str, list[str]]]:
    """(entity, aliases) of every case of the files, in file order, deduplicated."""
    groups, seen = [], set()
    for path in case_files:
        for c in load_cases(path):
            key = c["avoid"].lower()
            if key not in seen:
                seen.add(key)
                groups.append((c["avoid"], list(c["avoid_aliases"])))
    return groups


def pack_avoid(groups: list[tuple[str, list[str]]], n: int, *, pad_seed: int = 0) -> list[dict]:
    """An ``avoid`` list of exactly ``n`` distinct names (entities + aliases count): whole
    groups first (the request's own entity should be the first), then the remaining names
    packed as aliases, within the API's limits (64 entities, 32 aliases each); made-up names
    pad when the groups run out."""
    if n < 1:
        return []
    if n > MAX_ENTITIES * MAX_NAMES_PER_ENTITY:
        raise ValueError(f"at most {MAX_ENTITIES * MAX_NAMES_PER_ENTITY} names")
    seen: set[str] = set()

    def fresh(names):
        out = []
        for x in names:
            if x.lower() not in seen:
                seen.add(x.lower())
                out.append(x)
        return out

    out: list[dict] = []
    count = 0
    flat: list[str] = []
    for entity, aliases in groups:
        names = fresh([entity, *aliases])
        if not names:
            continue
        remaining_slots = MAX_ENTITIES - len(out) - 1
        left_after = n - count - len(names)
        if count < n and left_after <= remaining_slots * MAX_NAMES_PER_ENTITY:
            names = names[: min(n - count, MAX_NAMES_PER_ENTITY)]
            out.append({"entity": names[0], "aliases": names[1:]})
            count += len(names)
        else:
            flat.extend(names)
    need = n - count
    if len(flat) < need:
        flat += fresh(synthetic_names(need - len(flat) + 64, pad_seed))
    flat = flat[:need]
    while flat:
        if len(out) >= MAX_ENTITIES:
            raise ValueError("names do not fit in 64 entities")
        chunk, flat = flat[:MAX_NAMES_PER_ENTITY], flat[MAX_NAMES_PER_ENTITY:]
        out.append({"entity": chunk[0], "aliases": chunk[1:]})
    return out


def count_names(avoid: list[dict]) -> int:
    return sum(1 + len(e.get("aliases", [])) for e in avoid)


@lru_cache(maxsize=8192)
def name_forms(name: str) -> frozenset[str]:
    """The folded surface forms one name bans (the project's expansion rules)."""
    from greyelephant.control.surface_forms import expand_entity, fold_patterns

    return frozenset(fold_patterns(expand_entity(name, [])))


def count_forms(avoid: list[dict]) -> int:
    forms: set[str] = set()
    for e in avoid:
        for n in (e["entity"], *e.get("aliases", [])):
            forms |= name_forms(n)
    return len(forms)


def groups_for_forms(groups: list[tuple[str, list[str]]], max_forms: int,
                     pad_seed: int = 0) -> list[tuple[str, list[str]]]:
    """The leading names of ``groups`` (whole names, in order; made-up names after them)
    whose folded surface forms number at most ``max_forms``, as close to it as they get."""
    seen: set[str] = set()
    names: set[str] = set()
    out: list[tuple[str, list[str]]] = []
    padding = [(n, []) for n in synthetic_names(max_forms, pad_seed)]
    for entity, aliases in [*groups, *padding]:
        kept = []
        for name in (entity, *aliases):
            new = name_forms(name) - seen
            if new and len(seen) + len(new) <= max_forms and name.lower() not in names:
                seen |= new
                names.add(name.lower())
                kept.append(name)
        if kept:
            out.append((kept[0], kept[1:]))
        if len(seen) >= max_forms:
            break
    return out


def steering_body(scenario: Scenario, case: dict | None, pool: list[tuple[str, list[str]]],
                  index: int = 0) -> dict | None:
    """The request's ``steering`` object for one case (None: plain). ``pool``: the names
    big avoid lists draw from after the case's own entity."""
    kind = scenario.steering
    if kind == "mixed":
        kind = ("plain", "directive", "logits", "critique_revise")[index % 4]
        scenario = replace(scenario, steering=kind, names=30 if kind == "logits" else 0)
    if kind == "plain":
        return None
    own = [(case["avoid"], list(case["avoid_aliases"]))] if case else []
    if kind == "logits":
        groups = own + [g for g in pool if not own or g[0] != own[0][0]]
        if scenario.names == 1 and case:
            groups = [(case["avoid"], [])]
        if scenario.forms:
            groups = groups_for_forms(groups, scenario.forms)
            n = sum(1 + len(a) for _, a in groups)
        else:
            n = scenario.names
        body = {"avoid": pack_avoid(groups, n), "strategies": ["logits"]}
        if scenario.max_rollbacks is not None:
            body["max_rollbacks"] = scenario.max_rollbacks
        return body
    if case is None:
        raise ValueError(f"{scenario.name}: {kind} needs chat cases")
    body = {"avoid": [{"entity": case["avoid"], "aliases": list(case["avoid_aliases"])}],
            "prefer": [case["prefer"]], "strategies": [kind]}
    return body


def mixed_kind(index: int) -> str:
    return ("plain", "directive", "logits-30", "critique-revise")[index % 4]


@dataclass
class ChatRequest:
    messages: list[dict]
    steering: dict | None
    case_id: str
    kind: str


def chat_requests(scenario: Scenario, cases: list[dict], pool: list[tuple[str, list[str]]],
                  num_prompts: int) -> list[ChatRequest]:
    """``num_prompts`` requests cycling through ``cases`` (the eval file's order)."""
    reqs = []
    for i in range(num_prompts):
        case = cases[i % len(cases)]
        kind = mixed_kind(i) if scenario.steering == "mixed" else scenario.name.split("/")[0]
        reqs.append(ChatRequest(case["messages"], steering_body(scenario, case, pool, i),
                                case["id"], kind))
    return reqs
