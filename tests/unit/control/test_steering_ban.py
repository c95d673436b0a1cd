"""THE GUARANTEE, proved against the real tokenizer.

Whatever tokenization a decoder chooses, text decoded under the ban automaton's masks never
contains an avoided surface form at a word start (hence never a detector mention). Checked
four ways:

1. every mask equals a brute-force answer ("would this token complete a form?", computed
   by decoding the whole byte string and folding it with an independent regex reference)
   at many states, including states with pending UTF-8 bytes;
2. an exhaustive adversary: for each target string containing a form (case variants,
   separators, fullwidth, accents, combining marks, zero-width characters, byte tokens…)
   *every* segmentation of the target into vocabulary tokens is explored; none gets past
   the byte just before the form would complete — and targets without a form are reachable
   in full (no over-banning);
3. a hypothesis random walk: random tokens from a pool biased toward pieces of the forms,
   each replaced by the next unbanned pool token when banned, never produce a form;
4. the row state advanced token by token equals the automaton run over the tokenizer's own
   decode of the whole sequence.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from steering_reference import ref_mentions, ref_word_start_hit

from greyelephant.control.ban_automaton import (
    PREFER_MIN_CHARS,
    CompiledSteering,
    compile_steering,
)
from greyelephant.control.normalize import fold_text
from greyelephant.control.surface_forms import expand_entity, fold_patterns
from greyelephant.control.vocab_index import VocabIndex, pack_bool, unpack_words

AVOID = [("Eiffel Tower", ["Tour Eiffel"]), ("Nike", []), ("Coca-Cola", ["Coke"]),
         ("Zürich", []), ("McDonald's", ["McDonalds"]), ("PlayStation", ["PS5"]),
         ("Python", []), ("Beyoncé", [])]
PATTERNS = fold_patterns([f for n, a in AVOID for f in expand_entity(n, a)])
PREFER = fold_patterns(expand_entity("Louvre"))


@pytest.fixture(scope="module")
def cs(vocab_index) -> CompiledSteering:
    return CompiledSteering(vocab_index, PATTERNS, PREFER, prefer_bias=4.0)


@pytest.fixture(scope="module")
def by_bytes(vocab_index) -> dict[bytes, list[int]]:
    out: dict[bytes, list[int]] = {}
    for tid, b in enumerate(vocab_index.token_bytes):
        if b:
            out.setdefault(b, []).append(tid)
    return out


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def test_pack_roundtrip():
    rng = np.random.default_rng(0)
    m = rng.random(1000) < 0.3
    w = pack_bool(m, 32)
    assert w.dtype == np.int32 and w.shape == (32,)
    assert (unpack_words(w, 1000) == m).all()
    # bit j of word w <=> token 32*w + j
    one = np.zeros(100, bool)
    one[37] = True
    assert pack_bool(one, 4).tolist() == [0, 1 << 5, 0, 0]


def test_index_matches_tokenizer_decode(tokenizer, vocab_index):
    rng = np.random.default_rng(1)
    for _ in range(20):
        ids = rng.integers(0, len(tokenizer), 50).tolist()
        data = b"".join(vocab_index.token_bytes[i] or b"" for i in ids)
        assert _decode(data) == tokenizer.decode(ids, skip_special_tokens=True)


def _row_after(cs, tokens):
    row = cs.new_row()
    cs.advance_many(row, tokens)
    return row


PREFIXES = ["", " the", "I love the Eiff", "Eiffel", "Eiffel ", "the Eiffel  ", "Tour Eif",
            "coca-", "Coca Co", "Zu", "Mc", "McDonald", "PS", "Play", "Beyonc", "Nik", "(",
            "x"]


@pytest.mark.parametrize("prefix", PREFIXES + [b"Z\xc3", b" Beyonc\xc3", b"\xe2\x80"])
def test_masks_equal_brute_force(cs, tokenizer, vocab_index, by_bytes, prefix):
    if isinstance(prefix, bytes):
        tokens = [by_bytes[bytes([c])][0] for c in prefix]
        pbytes = prefix
    else:
        tokens = tokenizer.encode(prefix)
        pbytes = b"".join(vocab_index.token_bytes[t] for t in tokens)
    row = _row_after(cs, tokens)
    assert not row.violated
    assert (row.pending != b"") == isinstance(prefix, bytes) or prefix == b""
    got = cs.banned_bool(row)
    want = np.zeros_like(got)
    for tid, b in enumerate(vocab_index.token_bytes):
        if b is not None and ref_word_start_hit(_decode(pbytes + b), PATTERNS):
            want[tid] = True
    diff = np.nonzero(got != want)[0]
    assert diff.size == 0, [(int(t), vocab_index.token_bytes[t], bool(got[t])) for t in diff[:10]]


TARGETS = [
    "Eiffel Tower", " the Eiffel Tower", "EIFFEL tower", "eiffel-TOWER", "Eiffel\n\ntower",
    "(Eiffel_Tower)", "EiffelTower", "Tour Eiffel", "l'Eiffel Tower", "Ｅｉｆｆｅｌ Ｔｏｗｅｒ",
    "Eiffel\u00a0Tower", "Eif\u200bfel Tower", "I went to the eiffel towers.",
    "Nike", "NIKE", " Nikes", "nike's", "—Nike", "Nike\u0301", "Nikelodeon",
    "Coca-Cola", "coca cola", "COCACOLA", "Coca\u2011Cola", "Coke", "cOkE zero",
    "Zürich", "Zu\u0308rich", "ZÜRICH", "zurich", " in Zürich!",
    "McDonald’s", "Mc Donalds", "mcdonald's", "PS5", "ps 5", "Play-Station", "PLAYSTATION",
    "Python", "pYtHoN", "\tpython3", "Beyoncé", "BEYONCE", "Beyonce\u0301",
]
CONTROLS = ["Nikon", "Eiffel", "the tower", "Tower Eiffel", "cola", "Cocoa", "Pythagoras",
            "theNike", "xnike", "PS4", "McDonald", "Zurichsee"[:5] + "x", "Beyon", "coca  co"]


def _reachable(cs, tb: bytes, by_bytes, maxlen: int = 24):
    """Explore every segmentation of tb into vocabulary tokens allowed by the masks.
    Returns (max byte position reached, all (pos) visited)."""
    stack = [(0, cs.new_row())]
    seen = set()
    best = 0
    while stack:
        pos, row = stack.pop()
        key = (pos, row.avoid, row.pending)
        if key in seen:
            continue
        seen.add(key)
        best = max(best, pos)
        if pos == len(tb):
            continue
        banned = cs.banned_bool(row)
        for k in range(1, min(maxlen, len(tb) - pos) + 1):
            for tid in by_bytes.get(tb[pos:pos + k], ()):
                if banned[tid]:
                    continue
                nxt = dataclasses.replace(row)
                cs.advance(nxt, tid)
                assert not nxt.violated
                stack.append((pos + k, nxt))
    return best, {p for p, _, _ in seen}


@pytest.mark.parametrize("target", TARGETS)
def test_exhaustive_adversary_cannot_spell_a_form(cs, by_bytes, target):
    tb = target.encode()
    first_hit = next(e for e in range(1, len(tb) + 1) if ref_word_start_hit(_decode(tb[:e]), PATTERNS))
    best, visited = _reachable(cs, tb, by_bytes)
    for pos in visited:
        assert not ref_word_start_hit(_decode(tb[:pos]), PATTERNS)
    # exact: everything up to the byte before completion is reachable, nothing beyond
    assert best == first_hit - 1, (target, best, first_hit)


@pytest.mark.parametrize("target", CONTROLS)
def test_no_over_banning_on_near_misses(cs, by_bytes, target):
    tb = target.encode()
    assert not ref_word_start_hit(target, PATTERNS)
    best, _ = _reachable(cs, tb, by_bytes)
    assert best == len(tb)


@pytest.fixture(scope="module")
def pool(tokenizer, vocab_index, by_bytes):
    """Tokens that are pieces of the forms (any case), separators, byte tokens, EOS."""
    blob = " " + " ".join(PATTERNS) + " "
    ids = {t for t, f in enumerate(vocab_index.texts) if f and f in blob}
    for name, aliases in AVOID:
        for s in [name, *aliases, name.upper(), name.lower()]:
            ids.update(tokenizer.encode(s))
            ids.update(tokenizer.encode(" " + s))
            ids.update(by_bytes[bytes([c])][0] for c in s.encode())
    ids.update(tokenizer.encode(" - \n ' ’s s es \u0301 \u200b"))
    ids.add(tokenizer.eos_token_id)
    return sorted(ids)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=40))
def test_random_walk_fuzz_never_produces_a_form(cs, tokenizer, pool, choices):
    row = cs.new_row()
    ids = []
    for c in choices:
        banned = cs.banned_bool(row)
        k = c % len(pool)
        for j in range(len(pool)):  # adversarial fallback: next unbanned pool token
            tid = pool[(k + j) % len(pool)]
            if not banned[tid]:
                break
        ids.append(tid)
        cs.advance(row, tid)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert not row.violated
    assert not ref_word_start_hit(text, PATTERNS), text
    assert not ref_mentions(text, PATTERNS), text
    # incremental state == automaton over the tokenizer's own decode
    if not row.pending:
        assert row.avoid == cs.avoid.feed(cs.avoid.start, fold_text(text))[0]


def test_random_walk_has_teeth(cs, tokenizer, pool):
    """A seeded, more purposeful walk: it mixes pool tokens with planned spellings of a
    random surface form in random case. Without masks it spells forms often; with masks
    never, and the masks are hit often (the fuzz above is not vacuous)."""
    rng = np.random.default_rng(7)
    forms = [f for n, a in AVOID for f in expand_entity(n, a)]
    unmasked_hits = masked_hits = bans = 0
    for _ in range(150):
        plan: list[int] = []
        wanted: list[int] = []
        for _ in range(30):
            if not plan and rng.random() < 0.3:
                f = forms[rng.integers(len(forms))]
                f = "".join(c.upper() if rng.random() < 0.3 else c for c in f)
                plan = tokenizer.encode(rng.choice([" ", "", "\n", "-"]) + f)
            wanted.append(plan.pop(0) if plan else pool[rng.integers(len(pool))])
        free = tokenizer.decode(wanted, skip_special_tokens=True)
        unmasked_hits += ref_word_start_hit(free, PATTERNS)
        row, ids = cs.new_row(), []
        for tid in wanted:
            banned = cs.banned_bool(row)
            k = pool.index(tid) if tid in pool else 0
            while banned[tid]:
                bans += 1
                k += 1
                tid = pool[k % len(pool)]
            ids.append(tid)
            cs.advance(row, tid)
        masked_hits += ref_word_start_hit(tokenizer.decode(ids, skip_special_tokens=True), PATTERNS)
    assert masked_hits == 0
    assert unmasked_hits > 50 and bans > 50, (unmasked_hits, bans)


def test_prefer_bias_starts_continues_and_stops(cs, tokenizer, vocab_index):
    row = cs.new_row()
    ids, vals = cs.bias(row)
    texts = {vocab_index.texts[int(i)] for i in ids}
    assert {" lou", "lou"} <= texts and (vals == 4.0).all()  # " Louvre" is " L"+"ouvre" here
    assert all(len(t.strip()) >= PREFER_MIN_CHARS - 1 for t in texts)  # never bare "L"/" "
    # after " L" (a partial match) the continuation is boosted
    cs.advance_many(row, tokenizer.encode(" L"))
    texts = {vocab_index.texts[int(i)] for i in cs.bias(row)[0]}
    assert "ouvre" in texts or "ouv" in texts or "ou" in texts
    # once the preferred entity has appeared, the boost stops for the row
    cs.advance_many(row, tokenizer.encode("ouvre is nice"))
    assert row.prefer_done and cs.bias(row)[0].size == 0


def test_prefer_skips_articles_and_bare_separators(vocab_index, tokenizer):
    c = CompiledSteering(vocab_index, [], fold_patterns(expand_entity("The Rolling Stones")), 4.0)
    row = c.new_row()
    texts = {vocab_index.texts[int(i)] for i in c.bias(row)[0]}
    assert " rolling" in texts and " the" not in texts and "the" not in texts
    c.advance_many(row, tokenizer.encode("the Rolling"))
    texts = {vocab_index.texts[int(i)] for i in c.bias(row)[0]}
    assert " stones" in texts and " " not in texts
    c.advance_many(row, tokenizer.encode(" Stones"))
    assert row.prefer_done


def test_banned_words_shape_and_cache(cs, vocab_index):
    row = cs.new_row()
    w = cs.banned_words(row)
    assert w.dtype == np.int32 and w.shape == ((vocab_index.vocab_size + 31) // 32,)
    assert cs.banned_words(row) is w  # cached per state


def test_compile_1000_forms_is_fast_and_cached(vocab_index):
    forms = [f"brand{i} name{i % 37}" for i in range(1000)]
    t0 = time.perf_counter()
    c = compile_steering(vocab_index, forms, ["grey elephant"], 4.0)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert compile_steering(vocab_index, forms, ["grey elephant"], 4.0) is c
    warm = time.perf_counter() - t0
    assert cold < 0.5 and warm < 0.01  # generous bounds; benchmarks/steering_compile.py measures


def test_compiled_1000_forms_bans_completions(vocab_index, tokenizer):
    forms = [f"brand{i} name{i % 37}" for i in range(1000)]
    c = compile_steering(vocab_index, forms, ["grey elephant"], 4.0)
    row = c.new_row()
    c.advance_many(row, tokenizer.encode("see brand1 name"))
    banned = c.banned_bool(row)
    assert banned[tokenizer.encode("1")[0]] and not banned[tokenizer.encode("x")[0]]


def test_prefer_short_start_fallback_on_a_toy_vocabulary():
    """A form that no token of >= PREFER_MIN_CHARS characters can start gets its longest
    available start boosted (else it is only boosted once the model started it); a form
    with a long enough start token keeps the rule (no bare " L")."""
    tb = [None, b" X", b" x", b"box", b" Xb", b" L", b" Lou", b"vre", b" the", b"X", b" Y"]
    index = VocabIndex.from_token_bytes(tb)
    c = CompiledSteering(index, [], ["xbox", "louvre"], 4.0)
    row = c.new_row()
    boosted = {tb[int(i)] for i in c.bias(row)[0]}
    # " Xb" is the longest start of "xbox" (3 chars with the separator), " X" is shorter;
    # at text start (a word start) "X" is the longest start without a separator
    assert boosted == {b" Xb", b"X", b" Lou"}, boosted
    c2 = CompiledSteering(index, [], ["xylo"], 4.0)
    assert {tb[int(i)] for i in c2.bias(c2.new_row())[0]} == {b" X", b" x", b"X"}
    c.advance_many(row, [1])  # " X": the continuation is boosted as before
    assert {tb[int(i)] for i in c.bias(row)[0]} >= {b"box"}
    c.advance(row, 3)
    assert row.prefer_done and c.bias(row)[0].size == 0


def test_prefer_boost_is_spent_after_abandoned_attempts():
    """The boost is a nudge, not an attractor: once the row has taken a boosted token and
    then left the form unfinished MAX_PREFER_MISSES times, it stops for the row. Partial
    matches the row reached without a boosted token do not count."""
    from greyelephant.control.limits import MAX_PREFER_MISSES

    tb = [None, b" New", b" York", b" B", b"alance", b"fab", b" A", b" good", b" Ad", b"idas"]
    index = VocabIndex.from_token_bytes(tb)
    tid = {b: i for i, b in enumerate(tb) if b}
    c = CompiledSteering(index, [], ["new balance", "adidas"], 4.0)
    row = c.new_row()
    assert tid[b" New"] in c.bias(row)[0] and tid[b" A"] not in c.bias(row)[0]
    c.advance_many(row, [tid[b" A"], tid[b" good"]] * 3)  # " A": a partial, never boosted
    assert row.prefer_misses == 0 and c.bias(row)[0].size
    c.advance_many(row, [tid[b" New"], tid[b" York"]])  # took the nudge, went elsewhere
    assert row.prefer_misses == 1 and not row.prefer_done and c.bias(row)[0].size
    c.advance_many(row, [tid[b" New"], tid[b" B"]])  # progress is not a miss
    assert row.prefer_misses == 1 and tid[b"alance"] in c.bias(row)[0]
    c.advance(row, tid[b"fab"])
    assert row.prefer_misses == 2 == MAX_PREFER_MISSES
    assert row.prefer_done and c.bias(row)[0].size == 0
    # a row that finishes the form on its first try is done the usual way
    row = c.new_row()
    c.advance_many(row, [tid[b" New"], tid[b" B"], tid[b"alance"]])
    assert row.prefer_done and row.prefer_misses == 0
