"""The critique-revise loop's logic with a scripted generator (no engine)."""

import pytest
from pydantic import ValidationError

from greyelephant.control.critique_revise import (
    critique_revise,
    in_context_revision_messages,
    near_miss_aliases,
    revision_messages,
)
from greyelephant.control.detector import detector_for
from greyelephant.control.limits import MAX_NEAR_MISS_ALIASES
from greyelephant.control.spec import parse_steering

AVOID = [("Eiffel Tower", ("Tour Eiffel",))]
PREFER = [("Louvre", ())]
MESSAGES = [{"role": "user", "content": "What should I see in Paris?"}]
DETECTOR = detector_for(AVOID)


def scripted(*replies):
    calls = []
    avoided = []  # also_avoid of each call

    async def generate(prompt, also_avoid):
        calls.append(prompt)
        avoided.append(also_avoid)
        return replies[len(calls) - 1]

    generate.avoided = avoided
    return generate, calls


async def run(draft, generate, max_revisions=2):
    return await critique_revise(draft, MESSAGES, detector=DETECTOR, principle="Do not mention it.",
                                 avoid=AVOID, prefer=PREFER, generate=generate,
                                 max_revisions=max_revisions)


async def test_clean_draft_is_not_revised():
    generate, calls = scripted()
    out = await run("Visit the Louvre.", generate)
    assert (out.text, out.revisions, out.draft_violations, out.violations) == \
        ("Visit the Louvre.", 0, 0, 0)
    assert calls == []


async def test_dirty_draft_is_revised_until_clean():
    generate, calls = scripted("The tour eiffel is nice.", "See the Louvre.")
    out = await run("The Eiffel Tower, of course. Eiffel Towers everywhere.", generate)
    assert out.draft_violations == 2 and out.revisions == 2 and out.violations == 0
    assert out.text == "See the Louvre." and len(calls) == 2
    assert [h["violations"] for h in out.history] == [1, 0]


async def test_revisions_are_bounded_and_reported_honestly():
    generate, calls = scripted("Eiffel Tower again.", "Still the Eiffel Tower.")
    out = await run("The Eiffel Tower.", generate, max_revisions=2)
    assert out.revisions == 2 and out.violations == 1 and len(calls) == 2
    generate, calls = scripted()
    out = await run("The Eiffel Tower.", generate, max_revisions=0)
    assert out.revisions == 0 and out.violations == 1 and calls == []


def test_revision_prompt_names_the_problem_and_the_alternative():
    spans = DETECTOR.find("I love the Eiffel Tower.")
    msgs = revision_messages(MESSAGES, "I love the Eiffel Tower.", spans, "PRINCIPLE", AVOID, PREFER)
    assert msgs[0] == {"role": "system", "content": "PRINCIPLE"}
    user = msgs[1]["content"]
    assert '"Eiffel Tower"' in user and "Louvre" in user and "What should I see in Paris?" in user


def test_in_context_revision_asks_the_conversation_again_with_the_critique():
    spans = DETECTOR.find("I love the Eiffel Tower.")
    dialogue = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    msgs = in_context_revision_messages(dialogue, "I love the Eiffel Tower.", spans, "PRINCIPLE",
                                        AVOID, PREFER)
    # the conversation itself, last turn the user's; the draft is described, not shown
    assert msgs[1:] == MESSAGES and msgs[0]["role"] == "system"
    system = msgs[0]["content"]
    assert system.startswith("Be brief.") and "PRINCIPLE" in system
    assert '"Eiffel Tower"' in system and "Louvre" in system and "I love" not in system
    assert dialogue[0] == {"role": "system", "content": "Be brief."}  # input untouched


async def test_in_context_style_is_used_for_every_revision():
    generate, calls = scripted("Eiffel Tower again.", "See the Louvre.")
    out = await critique_revise("The Eiffel Tower.", MESSAGES, detector=DETECTOR,
                                principle="PRINCIPLE", avoid=AVOID, prefer=PREFER,
                                generate=generate, max_revisions=2, style="in_context")
    assert out.text == "See the Louvre." and out.revisions == 2
    assert all(c[-1] == MESSAGES[-1] for c in calls)


async def test_near_misses_found_so_far_are_handed_to_each_next_revision():
    generate, calls = scripted("The Eifel Tower is tall.", "The Eiffle Tower, again.",
                               "See the Louvre.")
    out = await run("The Eiffel Tower.", generate, max_revisions=3)
    assert out.text == "See the Louvre." and out.revisions == 3 and out.chosen == 3
    # the draft's mention is banned by the ban itself; its near misses are not there yet
    assert generate.avoided[0] == ()
    assert generate.avoided[1] == (("Eiffel Tower", "Eifel Tower"),)
    # accumulated, in the order found
    assert generate.avoided[2] == (("Eiffel Tower", "Eifel Tower"),
                                   ("Eiffel Tower", "Eiffle Tower"))


async def test_the_answer_is_the_text_with_the_fewest_findings_not_the_last():
    # the second revision brings a near miss back: the first, clean one is the answer
    generate, calls = scripted("See the Louvre.", "The Eifel Tower is tall.")
    out = await run("The Eiffel Tower, not the Eifel Tower.", generate, max_revisions=2)
    assert out.revisions == 1 and out.text == "See the Louvre." and out.chosen == 1
    generate, calls = scripted("The Eifel Tower.", "The Eiffel Tower. The Eiffel Tower.")
    out = await run("The Eiffel Tower.", generate, max_revisions=2)
    # a near miss beats a mention; the report counts what the answer holds
    assert out.revisions == 2 and out.text == "The Eifel Tower." and out.chosen == 1
    assert (out.violations, out.near_misses) == (0, 1)
    assert [h["violations"] for h in out.history] == [0, 2]


async def test_the_draft_stays_when_no_revision_improves_on_it():
    generate, calls = scripted("The Eifel Tower.", "The Eifel Tower, yes.")
    out = await run("The Eifel Tower.", generate, max_revisions=2)
    assert out.revisions == 2 and out.chosen == 2  # a tie: the latest
    generate, calls = scripted("The Eiffel Tower.", "The Eiffel Tower.")
    out = await run("The Eifel Tower.", generate, max_revisions=2)
    assert (out.chosen, out.text, out.violations, out.near_misses) == \
        (0, "The Eifel Tower.", 0, 1)


def test_near_miss_aliases_are_distinct_in_order_and_capped_per_entity():
    found = [("A", f"a{k}") for k in range(MAX_NEAR_MISS_ALIASES + 3)]
    found += [("A", "a0"), ("B", "b"), ("B", "b")]
    out = near_miss_aliases(found)
    assert out["A"] == tuple(f"a{k}" for k in range(MAX_NEAR_MISS_ALIASES))
    assert out["B"] == ("b",)
    assert near_miss_aliases(()) == {}


def test_a_spec_takes_near_misses_as_aliases_of_their_entity():
    spec = parse_steering({"avoid": [{"entity": "McDonald's", "aliases": ["McD"]}, "Nike"],
                           "prefer": ["Burger King"], "strategies": ["logits"]})
    more = spec.with_avoid_aliases({"McDonald's": ("MacDonald's", "McD")})
    assert more.avoid_entities() == [("McDonald's", ("McD", "MacDonald's")), ("Nike", ())]
    assert "macdonald s" in more.avoid_patterns and "macdonald s" not in spec.avoid_patterns
    assert more.spec_hash() != spec.spec_hash() and more.strategies == spec.strategies
    assert spec.with_avoid_aliases({}) is spec
    # an alias the preferred entity contains would make it unsayable: refused as a request is
    with pytest.raises(ValidationError):
        spec.with_avoid_aliases({"McDonald's": ("Burger",)})
