"""Near misses (misspelt / truncated names), the second mode of the mention detector."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from greyelephant.control import near_miss
from greyelephant.control.detector import (
    Detector,
    EntityForms,
    detector_for,
    find_mentions,
    find_near_misses,
)
from greyelephant.control.near_miss import (
    NearMiss,
    NearMissFinder,
    common_words,
    is_common,
    is_known,
    near_miss_finder_for,
    osa_distance,
)
from greyelephant.control.surface_forms import expand_entity

COCA = ("Coca-Cola", ("Coke",))
POSITIVE = [  # (text, entity, aliases, the misspelt part the near miss must cover)
    ("Coca-Coloca", *COCA, "Coca-Coloca"),
    ("Beatlemania", "The Beatles", (), "Beatlemania"),
    ("Arnold Schwarzeneggar", "Arnold Schwarzenegger", ("Schwarzenegger",), "Schwarzeneggar"),
    ("Schwarzeneggar", "Arnold Schwarzenegger", ("Schwarzenegger",), "Schwarzeneggar"),
    ("Mount Rushmor", "Mount Rushmore", (), "Rushmor"),
    ("Dmitri Mendelev", "Dmitri Mendeleev", ("Mendeleev",), "Mendelev"),
    ("the Hindenberg disaster", "Hindenburg disaster", ("Hindenburg",), "Hindenberg"),
    ("Magna Charte", "Magna Carta", (), "Charte"),
    ("the Tomb of Tutankhaman", "Tutankhamun", (), "Tutankhaman"),
    ("Sputniak-1", "Sputnik 1", (), "Sputniak"),
    ("Swearovski", "Swarovski", (), "Swearovski"),
    ("Wiener Schnitzen", "Wiener Schnitzel", (), "Schnitzen"),
    ("Bordeau", "Bordeaux", (), "Bordeau"),
    ("McDonald\u2019rekem", "McDonald's", (), "McDonald\u2019rekem"),
    ("Buckingham Castle", "Buckingham Palace", (), "Buckingham Castle"),
]
NEGATIVE = [  # (text, entity, aliases)
    ("phone", "iPhone", ()),
    ("window", "Windows", ()),
    ("windows of the house", "Windows", ()),
    ("Northern Hemisphere", "Northern Lights", ()),
    ("Romeo", "Rome", ()),
    ("Roman", "Rome", ()),
    ("romantic", "Rome", ()),
    ("Pythonic", "Python", ()),
    ("part", "Paris", ()),
    ("parts", "Paris", ()),
    ("Parisian", "Paris", ()),
    ("home", "Rome", ()),
    ("nice", "Nike", ()),
    ("bike", "Nike", ()),
    ("New Jersey", "New York", ()),
    ("Golden Gate Park", "Golden Gate Bridge", ()),
    ("Statue of Zeus", "Statue of Liberty", ()),
    ("cocaine", *COCA),
]
MENTIONS = [("Coca-Cola", *COCA), ("Rome's", "Rome", ()), ("Nikes", "Nike", ())]

EXAMPLE_ENTITIES = sorted({(e, a) for _, e, a, _ in POSITIVE} | {(e, a) for _, e, a in NEGATIVE})


def consistent(text: str, found: list[NearMiss]) -> None:
    last = -1
    for nm in found:
        assert text[nm.start : nm.end] == nm.text
        assert nm.start >= last  # leftmost, non-overlapping
        assert nm.kind in ("diverge", "edit")
        last = nm.end


@pytest.mark.parametrize(("text", "entity", "aliases", "part"), POSITIVE)
def test_flagged(text, entity, aliases, part):
    found = find_near_misses(text, entity, aliases)
    consistent(text, found)
    assert not find_mentions(text, entity, aliases)
    assert [nm.entity for nm in found] == [entity]
    assert part in found[0].text


@pytest.mark.parametrize(("text", "entity", "aliases"), NEGATIVE)
def test_not_flagged(text, entity, aliases):
    assert find_near_misses(text, entity, aliases) == []


@pytest.mark.parametrize(("text", "entity", "aliases"), MENTIONS)
def test_mentions_are_not_near_misses(text, entity, aliases):
    assert find_mentions(text, entity, aliases)
    assert find_near_misses(text, entity, aliases) == []


def test_all_examples_with_one_detector():
    det = detector_for(EXAMPLE_ENTITIES)
    for text, entity, _, part in POSITIVE:
        found = det.near_misses(text)
        consistent(text, found)
        assert [nm.entity for nm in found] == [entity], text
        assert part in found[0].text
    for text, _, _ in NEGATIVE:
        assert det.near_misses(text) == [], text
    text = " ".join(t for t, *_ in POSITIVE + NEGATIVE + MENTIONS)
    found = det.near_misses(text)
    consistent(text, found)
    assert [nm.entity for nm in found] == [e for _, e, _, _ in POSITIVE]
    assert det.near_misses(text, mentions=det.find(text)) == found


def test_a_text_with_both_counts_the_mention_once():
    text = "Coca-Cola (Coca-Coloca to some), also Coke."
    det = detector_for([COCA])
    mentions = det.find(text)
    assert [m.text for m in mentions] == ["Coca-Cola", "Coke"]
    found = det.near_misses(text)
    assert [(nm.text, nm.kind, nm.form) for nm in found] == [
        ("Coca-Coloca", "diverge", "coca cola")]
    assert all(nm.end <= m.start or m.end <= nm.start for nm in found for m in mentions)
    # a near miss that overlaps a mention (here of another entity) is dropped
    det = detector_for([("Buckingham Palace", ()), ("Castle Howard", ())])
    assert det.near_misses("Buckingham Castle") != []
    assert [m.text for m in det.find("Buckingham Castle Howard")] == ["Castle Howard"]
    assert det.near_misses("Buckingham Castle Howard") == []


def test_spans_on_the_original_text():
    text = "Le  SCHWARZE\u0301NEGGAR\u200b, then Mount\nRushmor\u0301 and Bucking\u00adham-Castle!"
    found = find_near_misses(text, "Arnold Schwarzenegger", ["Schwarzenegger"])
    consistent(text, found)
    assert [nm.text for nm in found] == ["SCHWARZE\u0301NEGGAR\u200b"]
    found = detector_for([("Mount Rushmore", ()), ("Buckingham Palace", ())]).near_misses(text)
    consistent(text, found)
    assert [(nm.text, nm.kind) for nm in found] == [
        ("Mount\nRushmor\u0301", "edit"), ("Bucking\u00adham-Castle", "diverge")]


def test_rules_in_detail():
    # a' needs a rare shared word and a distinctive share of the form
    assert find_near_misses("Buckingham.", "Buckingham Palace") == []  # nothing follows
    assert find_near_misses("the Eiffel Towel", "Eiffel Tower", ["Tour Eiffel"])
    assert find_near_misses("Dmitri Shostakovich", "Dmitri Mendeleev") == []  # 6 of 15
    # a: not after a known word ending exactly where the text diverges ("wind|burn")
    assert find_near_misses("a windburn", "Windows") == []
    assert find_near_misses("a Windowz", "Windows")  # (an edit, though)
    # a: a whole word of another form of the entity, with letters added
    aliases = ["Rachmaninoff", "Rachmaninov"]
    assert find_near_misses("Rachmaninoffx", "Sergei Rachmaninoff", aliases) == []
    assert find_near_misses("Rachmaninof", "Sergei Rachmaninoff", aliases)
    # b: allowance by form-word length; known words are never misspellings
    assert find_near_misses("Nikey", "Nike") == []  # 4 letters: exact only
    assert find_near_misses("Teslo", "Tesla")  # 5 letters: 1 edit
    assert find_near_misses("Tesslo", "Tesla") == []
    assert find_near_misses("Swaroskyi", "Swarovski")  # 9 letters: 2 edits
    assert find_near_misses("Mount Rushmors", "Mount Rushmore")  # plural of a misspelling
    assert find_near_misses("Sputnikk1", "Sputnik 1")  # joined variant, one edit
    assert find_near_misses("cpython", "Python") == []  # the form with letters added


def test_detector_method_builds_once_and_standalone_finder_agrees():
    det = Detector.for_entities([COCA, ("Mount Rushmore", ())])
    text = "Mount Rushmor and Coca-Coloca"
    first = det.near_misses(text)
    finder = det.__dict__["_near_miss_finder"]
    assert det.near_misses(text) == first
    assert det.__dict__["_near_miss_finder"] is finder
    items = [EntityForms(n, tuple(expand_entity(n, a))) for n, a in [COCA, ("Mount Rushmore", ())]]
    assert NearMissFinder(items).find(text) == first
    assert near_miss_finder_for([COCA, ("Mount Rushmore", ())]).find(text) == first
    assert NearMissFinder([]).find(text) == []
    assert det.near_misses("") == []


def test_osa_distance():
    assert osa_distance("abc", "abc", 2) == 0
    assert osa_distance("ab", "ba", 2) == 1  # transposition
    assert osa_distance("schwarzeneggar", "schwarzenegger", 2) == 1
    assert osa_distance("swearovski", "swarovski", 2) == 1
    assert osa_distance("kitten", "sitting", 3) == 3
    assert osa_distance("kitten", "sitting", 1) == 2  # capped at cap + 1
    assert osa_distance("", "abc", 5) == 3


def test_lexicon():
    assert is_common("window") and is_common("northern") and is_common("romeo")
    assert not is_common("eiffel") and not is_common("beatlemania")
    assert is_known("eiffel") and not is_known("buckingham") and not is_known("beatlemania")
    assert "don" in common_words() and "t" in common_words()  # "don't" split as folded


def test_missing_lexicon_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(near_miss, "LEXICON_PACKAGE", "no_such_package_for_near_miss")
    near_miss._lexicon.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="pyspellchecker"):
            common_words()
    finally:
        monkeypatch.undo()
        near_miss._lexicon.cache_clear()
    assert is_common("window")


# -- properties ----------------------------------------------------------------------

PROPS = settings(derandomize=True, max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
SEPARATORS = st.text(alphabet=" \n\t-_.,;:!?()[]\"/\u2014\u00a0", min_size=1, max_size=3)
FILLER = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
WORD = st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=10)
RANDOM_ENTITY = st.tuples(
    st.lists(WORD, min_size=1, max_size=3).map(" ".join),
    st.lists(st.lists(WORD, min_size=1, max_size=2).map(" ".join), max_size=2).map(tuple),
)
ENTITY = st.one_of(st.sampled_from(EXAMPLE_ENTITIES), RANDOM_ENTITY)
COMMON = sorted(common_words())


def overlaps(nm: NearMiss, a: int, b: int) -> bool:
    return nm.start < b and a < nm.end


@PROPS
@given(ENTITY, st.data(), FILLER, SEPARATORS, SEPARATORS, FILLER)
def test_exact_mention_is_never_a_near_miss(entity, data, left, s1, s2, right):
    name, aliases = entity
    form = data.draw(st.sampled_from(expand_entity(name, aliases)))
    text = left + s1 + form + s2 + right
    a = len(left + s1)
    b = a + len(form)
    found = detector_for([entity]).near_misses(text)
    consistent(text, found)
    assert not any(overlaps(nm, a, b) for nm in found)


@PROPS
@given(st.lists(st.sampled_from(COMMON), min_size=1, max_size=6),
       st.lists(SEPARATORS, min_size=6, max_size=6))
def test_common_words_are_never_flagged(words, seps):
    text = "".join(w + s for w, s in zip(words, seps, strict=False))
    det = detector_for(EXAMPLE_ENTITIES)
    assert det.near_misses(text) == []


@PROPS
@given(ENTITY, st.data(), FILLER, SEPARATORS,
       st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=4), SEPARATORS, FILLER)
def test_whole_form_with_letters_added_is_never_flagged(entity, data, left, s1, extra, s2, right):
    name, aliases = entity
    form = data.draw(st.sampled_from(expand_entity(name, aliases)))
    assume(form[-1:].isalpha())
    text = left + s1 + form + extra + s2 + right
    a = len(left + s1)
    b = a + len(form + extra)
    found = detector_for([entity]).near_misses(text)
    consistent(text, found)
    assert not any(overlaps(nm, a, b) for nm in found)


RARE_WORD = st.text(alphabet=string.ascii_lowercase, min_size=6, max_size=14).filter(
    lambda w: not is_known(w))


@PROPS
@given(RARE_WORD, st.data(), FILLER, SEPARATORS, SEPARATORS, FILLER)
def test_one_substituted_letter_in_a_long_rare_word_is_flagged(word, data, left, s1, s2, right):
    i = data.draw(st.integers(0, len(word) - 1))
    letter = data.draw(st.sampled_from(string.ascii_lowercase).filter(lambda c: c != word[i]))
    typo = word[:i] + letter + word[i + 1 :]
    assume(not is_known(typo))
    text = left + s1 + typo + s2 + right
    a = len(left + s1)
    b = a + len(typo)
    det = detector_for([word.capitalize()])
    assume(not det.find(text))  # the filler does not happen to name it
    found = det.near_misses(text)
    consistent(text, found)
    assert any(nm.start <= a and b <= nm.end and nm.entity == word.capitalize()
               for nm in found), (text, found)
