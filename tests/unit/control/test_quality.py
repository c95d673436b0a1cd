import pytest
from hypothesis import given
from hypothesis import strategies as st

from greyelephant.control.quality import degeneracy


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("   \n", "empty"), ("...!", "empty"), ("Yes.", "empty"),
    ("I like the the the the the park", "stutter"),
    ("The Louvre is great. " * 6, "repetitive"),
])
def test_degenerate_examples(text, reason):
    assert degeneracy(text) == reason


@pytest.mark.parametrize("text", [
    "Visit the Louvre: it holds the Mona Lisa and thousands of other works.",
    "The Louvre is great. The Louvre is also huge, so plan a full day there.",
    "Paris has many museums; the Musée d'Orsay and the Louvre are the best known.",
])
def test_normal_answers_are_fine(text):
    assert degeneracy(text) is None


@given(st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "eps"]), min_size=3,
                max_size=30, unique=True))
def test_distinct_words_never_degenerate(words):
    assert degeneracy(" ".join(words)) is None
