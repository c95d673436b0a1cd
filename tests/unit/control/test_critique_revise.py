"""The critique-revise loop's logic with a scripted generator (no engine)."""

from greyelephant.control.critique_revise import (
    critique_revise,
    in_context_revision_messages,
    revision_messages,
)
from greyelephant.control.detector import detector_for

AVOID = [("Eiffel Tower", ("Tour Eiffel",))]
PREFER = [("Louvre", ())]
MESSAGES = [{"role": "user", "content": "What should I see in Paris?"}]
DETECTOR = detector_for(AVOID)


def scripted(*replies):
    calls = []

    async def generate(prompt):
        calls.append(prompt)
        return replies[len(calls) - 1]

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
