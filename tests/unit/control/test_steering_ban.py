"""THE GUARANTEE, proved against the real tokenizer.

Whatever tokenization a decoder chooses, text decoded under the ban automaton's masks
never contains a mention of an avoided entity. Two mask families are checked: the
word-end ban of rollback rows (``banned_words`` at every step, ``final_words`` at the
last one, stop tokens banned while the text ends with a form: "Romeo" stays allowed under
a Rome ban) and the prefix ban of rows without rollback (``prefix_words``: no form at a
word start whatever follows). Checked five ways:

1. every mask equals a brute-force answer (decoding the whole byte string and folding it
   with an independent regex reference) at many states, including states with pending
   UTF-8 bytes; so do the last-step and start-ban masks;
2. an exhaustive adversary: for each target string containing a form (case variants,
   separators, fullwidth, accents, combining marks, zero-width characters, byte tokens…)
   *every* segmentation of the target into vocabulary tokens is explored; none gets past
   the byte just before the mention would complete — and targets without one are
   reachable in full (no over-banning);
3. a hypothesis random walk: random tokens from a pool biased toward pieces of the forms,
   each replaced by the next unbanned pool token when banned, ending at EOS or at a
   length limit, never produce a mention;
4. the row state advanced token by token equals the automaton run over the tokenizer's own
   decode of the whole sequence;
5. "Romeo" is writable under a Rome ban while "Rome", "Rome's" and "Romes" are not.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from steering_reference import ref_begins, ref_closed_hit, ref_mentions, ref_word_start_hit

from greyelephant.control.ban_automaton import (
    PREFER_MIN_CHARS,
    CompiledSteering,
    compile_steering,
    steering_key,
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


def _prefix_state(cs, tokenizer, vocab_index, by_bytes, prefix):
    if isinstance(prefix, bytes):
        tokens = [by_bytes[bytes([c])][0] for c in prefix]
        pbytes = prefix
    else:
        tokens = tokenizer.encode(prefix)
        pbytes = b"".join(vocab_index.token_bytes[t] for t in tokens)
    row = _row_after(cs, tokens)
    assert not row.violated
    assert (row.pending != b"") == isinstance(prefix, bytes) or prefix == b""
    return row, pbytes


def _want(vocab_index, pbytes, hit, textless_hit=False):
    want = np.zeros(vocab_index.vocab_size, dtype=bool)
    for tid, b in enumerate(vocab_index.token_bytes):
        want[tid] = textless_hit if b is None else hit(_decode(pbytes + b))
    return want


def _check(got, want, vocab_index):
    diff = np.nonzero(got != want)[0]
    assert diff.size == 0, [(int(t), vocab_index.token_bytes[t], bool(got[t])) for t in diff[:10]]


ALL_PREFIXES = PREFIXES + [b"Z\xc3", b" Beyonc\xc3", b"\xe2\x80"]


@pytest.mark.parametrize("prefix", ALL_PREFIXES + ["Nike", "the Coca-Cola", "PS5"])
def test_word_end_masks_equal_brute_force(cs, tokenizer, vocab_index, by_bytes, prefix):
    row, pbytes = _prefix_state(cs, tokenizer, vocab_index, by_bytes, prefix)
    got = unpack_words(cs.banned_words(row), vocab_index.vocab_size)
    _check(got, _want(vocab_index, pbytes, lambda t: ref_closed_hit(t, PATTERNS)), vocab_index)


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_prefix_masks_equal_brute_force(cs, tokenizer, vocab_index, by_bytes, prefix):
    row, pbytes = _prefix_state(cs, tokenizer, vocab_index, by_bytes, prefix)
    got = unpack_words(cs.prefix_words(row), vocab_index.vocab_size)
    _check(got, _want(vocab_index, pbytes, lambda t: ref_word_start_hit(t, PATTERNS)
                      or ref_closed_hit(t, PATTERNS)), vocab_index)


@pytest.mark.parametrize("prefix", ALL_PREFIXES + ["Nike", "the Coca-Cola", "PS5", "Nikes"])
def test_last_step_masks_equal_brute_force(cs, tokenizer, vocab_index, by_bytes, prefix):
    """The last token may not leave the text ending with a whole form (nor with pending
    bytes after one, which decode to U+FFFD); tokens without text end it as it is."""
    row, pbytes = _prefix_state(cs, tokenizer, vocab_index, by_bytes, prefix)
    got = unpack_words(cs.final_words(row), vocab_index.vocab_size)
    ends = ref_closed_hit(_decode(pbytes), PATTERNS, at_end=True)
    want = _want(vocab_index, pbytes, lambda t: ref_closed_hit(t, PATTERNS, at_end=True),
                 textless_hit=ends)
    _check(got, want, vocab_index)
    assert cs.ends_form(row.avoid) == (ends and not row.pending)


@pytest.mark.parametrize("prefix", ["", "I love", "I love ", "drink a (", "the Coca-",
                                    "Tesla and", "x"])
def test_start_ban_masks_equal_brute_force(cs, tokenizer, vocab_index, by_bytes, prefix):
    """At a position a rollback returned to, every token that begins a form of the named
    entity is banned (any tokenization), besides the usual completions."""
    group = [f for f in (expand_entity("Coca-Cola", ["Coke"]))]
    bodies = fold_patterns(group)
    groups = [fold_patterns(expand_entity(n, a)) for n, a in AVOID]
    c = CompiledSteering(cs.index, groups, [], 4.0)
    row, pbytes = _prefix_state(c, tokenizer, vocab_index, by_bytes, prefix)
    g = next(i for i, (n, _) in enumerate(AVOID) if n == "Coca-Cola")
    got = unpack_words(c.start_words(row, [g]), vocab_index.vocab_size)
    before = _decode(pbytes)
    want = _want(vocab_index, pbytes, lambda t: ref_closed_hit(t, PATTERNS)
                 or ref_begins(before, t, bodies))
    _check(got, want, vocab_index)


def test_romeo_is_allowed_under_a_rome_ban(vocab_index, tokenizer, by_bytes):
    """A word that goes on past a whole form is another word: under the word-end ban
    "Romeo" is writable in any tokenization, while "Rome", "Rome's", "Romes" and "Rome."
    never complete, not even as the last word of the text."""
    c = CompiledSteering(vocab_index, [fold_patterns(expand_entity("Rome"))], [], 4.0)
    for text in ["Romeo", " Romeo and Juliet", "romeo", "Romantic", "Roman"]:
        assert _reachable(c, (text + " ").encode(), by_bytes)[0] == len(text) + 1, text
    for text in [" Rome.", " Rome's", " Romes ", " ROME\n", "(Rome)"]:
        tb = text.encode()
        best, _ = _reachable(c, tb, by_bytes)
        assert best < len(tb), text
    # the last token cannot end the text with the form either
    for text in [" Rome", "Rome", " Romes"]:
        row = c.new_row()
        ids = tokenizer.encode(text)
        c.advance_many(row, ids[:-1])
        assert unpack_words(c.final_words(row), vocab_index.vocab_size)[ids[-1]], text
    # and the prefix ban of rows without rollback blocks "Romeo" too
    row = c.new_row()
    c.advance_many(row, tokenizer.encode(" Rom"))
    assert unpack_words(c.prefix_words(row), vocab_index.vocab_size)[tokenizer.encode("eo")[0]]


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


def _reachable(cs, tb: bytes, by_bytes, maxlen: int = 24, prefix: bool = False):
    """Explore every segmentation of tb into vocabulary tokens allowed by the masks (the
    word-end ban, or the prefix ban). Returns (max byte position reached, all positions
    visited)."""
    masks = cs.prefix_words if prefix else cs.banned_words
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
        banned = unpack_words(masks(row), cs.index.vocab_size)
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
def test_exhaustive_adversary_cannot_spell_a_mention(cs, by_bytes, target):
    """Word-end ban: followed by a separator, no form is reachable; everything before the
    separator is (the text may still turn into another word)."""
    tb = (target + " ").encode()
    first_hit = next((e for e in range(1, len(tb) + 1)
                      if ref_closed_hit(_decode(tb[:e]), PATTERNS)), len(tb) + 1)  # +1: none
    best, visited = _reachable(cs, tb, by_bytes)
    for pos in visited:
        assert not ref_closed_hit(_decode(tb[:pos]), PATTERNS)
    assert best == first_hit - 1, (target, best, first_hit)


@pytest.mark.parametrize("target", TARGETS)
def test_exhaustive_adversary_cannot_start_a_form_under_the_prefix_ban(cs, by_bytes, target):
    tb = target.encode()
    first_hit = next(e for e in range(1, len(tb) + 1)
                     if ref_word_start_hit(_decode(tb[:e]), PATTERNS))
    best, visited = _reachable(cs, tb, by_bytes, prefix=True)
    for pos in visited:
        assert not ref_word_start_hit(_decode(tb[:pos]), PATTERNS)
    assert best == first_hit - 1, (target, best, first_hit)


@pytest.mark.parametrize("target", CONTROLS + ["Nikelodeon", "Pythonic", "Coca-Colab"])
def test_no_over_banning_on_near_misses(cs, by_bytes, target):
    tb = (target + " ").encode()
    assert not ref_closed_hit(target + " ", PATTERNS)
    best, _ = _reachable(cs, tb, by_bytes)
    assert best == len(tb)
    if not ref_word_start_hit(target, PATTERNS):
        assert _reachable(cs, target.encode(), by_bytes, prefix=True)[0] == len(target.encode())


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


def _walk(cs, pool, choices, eos, prefix):
    """Decode ``choices`` (pool indices) under the masks of one mode, with a length limit
    (the last step uses the last-step mask) and EOS banned while the text ends with a
    form — as the logits processor does."""
    row, ids = cs.new_row(), []
    limit = len(choices)
    for step, c in enumerate(choices):
        if step + 1 == limit:
            words = cs.final_words(row)
            if prefix:
                words = words | cs.prefix_words(row)
        else:
            words = cs.prefix_words(row) if prefix else cs.banned_words(row)
        banned = unpack_words(words, cs.index.vocab_size)
        if cs.ends_form(row.avoid):
            banned[eos] = True
        k = c % len(pool)
        for j in range(len(pool)):  # adversarial fallback: next unbanned pool token
            tid = pool[(k + j) % len(pool)]
            if not banned[tid]:
                break
        ids.append(tid)
        cs.advance(row, tid)
        if tid == eos:
            break
    return row, ids


@pytest.mark.parametrize("prefix", [False, True], ids=["word_end", "prefix"])
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(choices=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=40))
def test_random_walk_fuzz_never_produces_a_mention(cs, tokenizer, pool, prefix, choices):
    row, ids = _walk(cs, pool, choices, tokenizer.eos_token_id, prefix)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert not row.violated
    assert not ref_mentions(text, PATTERNS), text
    if prefix:
        assert not ref_word_start_hit(text, PATTERNS), text
    # incremental state == automaton over the tokenizer's own decode
    if not row.pending:
        assert row.avoid == cs.avoid.feed(cs.avoid.start, fold_text(text))[0]


def test_random_walk_has_teeth(cs, tokenizer, pool):
    """A seeded, more purposeful walk: it mixes pool tokens with planned spellings of a
    random surface form in random case. Without masks it spells forms often; with masks
    never (in either mode), and the masks are hit often (the fuzz above is not vacuous)."""
    rng = np.random.default_rng(7)
    forms = [f for n, a in AVOID for f in expand_entity(n, a)]
    unmasked_hits = 0
    masked_hits = {False: 0, True: 0}
    bans = {False: 0, True: 0}
    for _ in range(150):
        plan: list[int] = []
        wanted: list[int] = []
        for _ in range(30):
            if not plan and rng.random() < 0.3:
                f = forms[rng.integers(len(forms))]
                f = "".join(c.upper() if rng.random() < 0.3 else c for c in f)
                plan = tokenizer.encode(rng.choice([" ", "", "\n", "-"]) + f
                                        + rng.choice([" ", ".", ""]))
            wanted.append(plan.pop(0) if plan else pool[rng.integers(len(pool))])
        free = tokenizer.decode(wanted, skip_special_tokens=True)
        unmasked_hits += ref_mentions(free, PATTERNS)
        for prefix in (False, True):
            row, ids = cs.new_row(), []
            for tid in wanted:
                banned = unpack_words(cs.prefix_words(row) if prefix else cs.banned_words(row),
                                      cs.index.vocab_size)
                k = pool.index(tid) if tid in pool else 0
                while banned[tid]:
                    bans[prefix] += 1
                    k += 1
                    tid = pool[k % len(pool)]
                ids.append(tid)
                cs.advance(row, tid)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            # mid-text mentions only: the walk has no last-step mask
            masked_hits[prefix] += ref_closed_hit(text, PATTERNS)
    assert masked_hits == {False: 0, True: 0}
    assert unmasked_hits > 50 and min(bans.values()) > 50, (unmasked_hits, bans)


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


def test_compile_1000_forms_is_cached(vocab_index):
    """A second compile of the same spec is the cached object (how long either takes is
    benchmarks/steering_compile.py's to measure, not a test's)."""
    forms = [f"brand{i} name{i % 37}" for i in range(1000)]
    c = compile_steering(vocab_index, forms, ["grey elephant"], 4.0)
    assert compile_steering(vocab_index, forms, ["grey elephant"], 4.0) is c
    assert compile_steering(vocab_index, forms[:-1], ["grey elephant"], 4.0) is not c


def test_steering_key_names_what_the_compile_depends_on():
    """The compile cache's key: one entity's forms in any order and a plain string for an
    entity of one form are the same spec; the entities' order (their group ids), the
    preferred forms and the bias (to 4 places) tell specs apart."""
    key = steering_key([["b", "a"], "c"], ["y", "x"], 4.0)
    assert steering_key([("a", "b"), ("c",)], ("x", "y"), 4.00001) == key
    assert hash(steering_key([("a", "b"), ("c",)], ("x", "y"), 4)) == hash(key)
    for other in (steering_key(["c", ["a", "b"]], ["x", "y"], 4.0),  # groups swapped
                  steering_key([["a", "b", "c"]], ["x", "y"], 4.0),  # one group
                  steering_key([["a"], ["b"], ["c"]], ["x", "y"], 4.0),
                  steering_key([["a", "b"], "c"], ["x"], 4.0),
                  steering_key([["a", "b"], "c"], ["x", "y"], 4.001)):
        assert other != key


def test_compiled_1000_forms_bans_completions(vocab_index, tokenizer):
    forms = [f"brand{i} name{i % 37}" for i in range(1000)]
    c = compile_steering(vocab_index, forms, ["grey elephant"], 4.0)
    row = c.new_row()
    c.advance_many(row, tokenizer.encode("see brand1 name"))
    prefix = unpack_words(c.prefix_words(row), vocab_index.vocab_size)
    assert prefix[tokenizer.encode("1")[0]] and not prefix[tokenizer.encode("x")[0]]
    c.advance_many(row, tokenizer.encode("1"))
    banned = unpack_words(c.banned_words(row), vocab_index.vocab_size)
    assert banned[tokenizer.encode(" ")[0]] and not banned[tokenizer.encode("x")[0]]


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


def test_specs_that_prefer_alike_share_one_prefer_side_and_steer_as_if_alone(vocab_index,
                                                                           tokenizer):
    """The preferred side depends only on the vocabulary, the preferred forms and the
    bias: specs that avoid different entities share it (the boosted tokens computed once),
    and a row under each moves and is boosted exactly as under a side of its own."""
    from greyelephant.control import ban_automaton as ba

    a = CompiledSteering(vocab_index, PATTERNS[:3], PREFER, prefer_bias=4.0)
    b = CompiledSteering(vocab_index, PATTERNS[3:], list(reversed(PREFER)), prefer_bias=4.0)
    assert a.prefer_side is b.prefer_side  # (the forms' order does not matter)
    other = CompiledSteering(vocab_index, PATTERNS[3:], PREFER, prefer_bias=2.0)
    assert other.prefer_side is not a.prefer_side
    assert other.bias(other.new_row())[1].tolist() == [2.0] * other.bias(other.new_row())[0].size
    # a side of its own (the shared ones out of reach) against the shared one
    ba._PREFER_SIDES.clear()
    alone = CompiledSteering(vocab_index, PATTERNS[3:], PREFER, prefer_bias=4.0)
    assert alone.prefer_side is not b.prefer_side
    text = " I'd rather visit the Louvre museum, the Lou vre, then the Louvre again."
    tokens = tokenizer.encode(text, add_special_tokens=False)
    rows = [b.new_row(), alone.new_row()]
    for t in tokens:
        got = [c.bias(r) for c, r in zip((b, alone), rows, strict=True)]
        assert got[0][0].tolist() == got[1][0].tolist()
        assert got[0][1].tolist() == got[1][1].tolist()
        for c, r in zip((b, alone), rows, strict=True):
            c.advance(r, t)
        assert dataclasses.astuple(rows[0]) == dataclasses.astuple(rows[1])
    assert rows[0].prefer_done  # (the walk reached the form)


def test_a_prefer_side_s_moves_start_over_past_their_bound_and_rows_move_alike(
        vocab_index, tokenizer, monkeypatch):
    from greyelephant.control import ban_automaton as ba

    ba._PREFER_SIDES.clear()
    free = CompiledSteering(vocab_index, PATTERNS[:2], PREFER, prefer_bias=4.0)
    ba._PREFER_SIDES.clear()
    monkeypatch.setattr(ba, "MAX_PREFER_MOVES", 3)
    tight = CompiledSteering(vocab_index, PATTERNS[:2], PREFER, prefer_bias=4.0)
    assert tight.prefer_side is not free.prefer_side
    tokens = tokenizer.encode(" We saw the Lou and the Louvre, then Paris and the Louvre.",
                              add_special_tokens=False)
    rows = [free.new_row(), tight.new_row()]
    for t in tokens:
        for c, r in zip((free, tight), rows, strict=True):
            c.advance(r, t)
        assert dataclasses.astuple(rows[0]) == dataclasses.astuple(rows[1])
        assert len(tight.prefer_side.trans) <= 3
    assert rows[0].prefer_done


def _reference_prefer_tokens(side, q) -> list[int]:
    """A prefer state's boosted tokens from its options (:meth:`PreferSide.options`) by
    the algorithm before the option memo (all the options' ranges at once,
    vocabulary-sized masks, no memo): the reference the memoised
    :meth:`PreferSide._tokens` must equal."""
    from greyelephant.control.ban_automaton import SEP
    from greyelephant.control.vocab_index import ranges_to_mask

    idx = side.index
    options = []
    for s, r, need in side.options(q):
        ks = [k for k in range(1, len(r)) if r[:k].strip(SEP)]
        options.append((s + r, [s + r[:k] for k in ks if k >= need],
                        [s + r[:k] for k in reversed(ks) if k < need]))
    if not options:
        return []
    size = idx.sorted_ids.size
    lo, hi = idx.prefix_ranges([o[0] for o in options])
    start_ok = lo < hi
    sel = ranges_to_mask(lo, hi, size)
    exact = [piece for o in options for piece in o[1]]
    long_ok = np.zeros(0, dtype=bool)
    if exact:
        lo, hi = idx.exact_ranges(exact)
        long_ok = lo < hi
        sel |= ranges_to_mask(lo, hi, size)
    at = 0
    for j, (_, longer, shorter) in enumerate(options):
        if shorter and not start_ok[j] and not long_ok[at:at + len(longer)].any():
            lo, hi = idx.exact_ranges(shorter)
            hit = np.flatnonzero(lo < hi)
            if hit.size:
                sel |= ranges_to_mask(lo[hit[:1]], hi[hit[:1]], size)
        at += len(longer)
    return sorted(set(idx.sorted_ids[sel].tolist()))


def _assert_every_prefer_state_as_the_reference(side):
    for q in range(len(side.ac.depth)):
        ids, vals = side._tokens(q)
        assert ids.dtype == np.int32 and vals.dtype == np.float32
        assert ids.tolist() == _reference_prefer_tokens(side, q), (q, side.ac.label(q))
        assert vals.tolist() == [side.bias] * ids.size


def test_memoised_prefer_options_boost_what_the_reference_boosts_on_the_dev_set(
        vocab_index, monkeypatch):
    """Each prefer option's tokens are memoised per vocabulary and a state's boosted
    tokens are their union: at every state of prefer sides drawn from the dev set's
    preferred entities (sharing forms, so later sides hit what earlier ones memoised), and
    with a memo small enough to start over inside a state, the same tokens as the
    reference."""
    import json
    import random
    from pathlib import Path

    from greyelephant.control import ban_automaton as ba

    lines = (Path(__file__).resolve().parents[3] / "benchmarks" / "data"
             / "pink_elephant_dev.jsonl").read_text().splitlines()
    prefers = [json.loads(line)["prefer"] for line in lines if line.strip()]
    draw = random.Random(0)
    vocab_index.memo("prefer_options").clear()
    for _ in range(3):
        side = ba.PreferSide(vocab_index, fold_patterns(draw.sample(prefers, 8)), 4.0)
        _assert_every_prefer_state_as_the_reference(side)
    assert vocab_index.memo("prefer_options")
    monkeypatch.setattr(ba, "MAX_PREFER_OPTIONS", 4)
    side = ba.PreferSide(vocab_index, fold_patterns(draw.sample(prefers, 8)), 4.0)
    _assert_every_prefer_state_as_the_reference(side)
    assert len(vocab_index.memo("prefer_options")) <= 4 + len(side.ac.keys) * 2


@settings(max_examples=150, deadline=None)
@given(prefer=st.lists(st.text(alphabet="ab ", min_size=1, max_size=6), min_size=1,
                       max_size=4),
       pieces=st.lists(st.text(alphabet="ab ", min_size=1, max_size=4), min_size=1,
                       max_size=12))
def test_memoised_prefer_options_boost_what_the_reference_boosts_on_toy_vocabularies(
        prefer, pieces):
    # a two-letter alphabet and separators: forms that are each other's prefixes and
    # pieces, vocabularies where some forms can only start with a short token (the
    # fallback) and some not at all
    from greyelephant.control import ban_automaton as ba

    index = VocabIndex.from_token_bytes([None, *(p.encode() for p in pieces)])
    side = ba.PreferSide(index, ba.minimal_patterns(ba._strip_articles(ba._folded(prefer))),
                         4.0)
    _assert_every_prefer_state_as_the_reference(side)
