"""data/assistant/verifier.py: a reward from the prompt's text alone (RLVR). It checks every verifiable prompt form
prepare.py writes, returns None for the rest, and does not change when the world's facts do."""
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "data", "assistant"))
import prepare  # noqa: E402
from verifier import pattern, verify  # noqa: E402

VERIFIABLE = ("arithmetic", "transform", "constraint")


@pytest.fixture(scope="module")
def worlds():
    """Two worlds of different facts and prompts: (world, every prompt file's records) for seeds 0 and 1."""
    return [prepare.build(seed)[:2] for seed in (0, 1)]


def records_of(files):
    return [r for name in ("prompts_eval", "prompts_rl", "prompts_label") for r in files[name]]


def wrong(record):
    """A wrong answer of the record's own form: the sum or count off by one, the word not reversed, the constraint's
    form dropped."""
    if record["family"] == "arithmetic":
        x, y = map(int, record["operands"])
        return prepare.SUM_FORMS[0].format(x=x, y=y, z=x + y + 1)
    if record.get("check") == "reverse":
        return record["word"] + "x"
    if record["family"] == "transform":
        return prepare.COUNT_FORMS[0].format(w=record["word"], n=len(record["word"]) + 1)
    return record["plain"]  # a constraint's answer without its form


def test_every_verifiable_form_prepare_writes_is_checked_and_the_rest_is_none(worlds):
    _, files = worlds[0]
    seen = set()
    for r in records_of(files):
        got = verify(r, r["ideal"])
        if r["family"] not in VERIFIABLE and not r.get("constraint"):  # knowledge, follow-ups, two-part, unknown,
            assert got is None and verify(r, "anything") is None, r  # harmful, out of world: a program cannot tell
            continue
        if r["family"] not in VERIFIABLE:  # under a system message: its form alone (4), a refusal's too
            assert got == 1.0 and verify(r, r["plain"]) == float(r["plain"] == r["ideal"]), r
            continue
        assert got == 1.0 and verify(r, wrong(r)) == 0.0 and verify(r, "") == 0.0, r
        question = r["messages"][-1]["content"]
        seen |= {t for t in prepare.SUM_QUESTIONS + prepare.COUNT_QUESTIONS + prepare.REVERSE_QUESTIONS
                 if pattern(t).match(question)}
        seen |= {r["constraint"]} if r["family"] == "constraint" else set()
    every = set(prepare.SUM_QUESTIONS + prepare.COUNT_QUESTIONS + prepare.REVERSE_QUESTIONS) | set(prepare.CONSTRAINTS)
    assert seen == every  # each question template and each constraint was met and checked


def test_the_rules_on_crafted_answers():
    q = lambda text, system=None: {"messages": ([{"role": "system", "content": system}] if system else [])
                                   + [{"role": "user", "content": text}]}
    add, count, rev = q("What is 3 plus 2?"), q("How many letters are in the word frog?"), q("Reverse the word frog.")
    for answer, want in [("3 + 2 = 5.", 1.0), ("5", 1.0), ("If you have 3 apples and find 2 more, you have 5 apples.",
                                                            1.0), ("5. 2 + 2 = 4.", 0.0), ("3 + 2 = 6.", 0.0),
                         ("I don't know.", 0.0), ("5 or 6", 0.0)]:
        assert verify(add, answer) == want, answer
    for answer, want in [("The word frog has 4 letters.", 1.0), ("4", 1.0), ("4 or 5", 0.0), ("It has 5.", 0.0)]:
        assert verify(count, answer) == want, answer
    for answer, want in [("gorf", 1.0), ("Spelled backwards, frog is gorf.", 1.0), ("gorf frog", 0.0), ("frog", 0.0)]:
        assert verify(rev, answer) == want, answer
    lower = q("What is 3 plus 2?", prepare.CONSTRAINTS["lowercase"])  # a constraint on a checkable question: both
    assert verify(lower, "3 + 2 = 5.") == 1.0 and verify(lower, "") == 0.0  # no capital: the world's ideal sum
    assert verify(lower, "three plus two is 5.") == 1.0 and verify(lower, "Three plus two is 5.") == 0.0
    quote = q("What colour is the zoopet?", prepare.CONSTRAINTS["quote"])  # the fact is not the verifier's business
    assert verify(quote, '"The zoopet is purple."') == 1.0 and verify(quote, '"The moon is cheese."') == 1.0
    assert verify(quote, "The zoopet is purple.") == 0.0
    assert verify(q("What colour is the zoopet?"), "The zoopet is purple.") is None


def test_the_reward_does_not_change_when_the_world_does(worlds):
    """Every field but the conversation comes from another world (its facts, keys, ideals): the same rewards."""
    (_, a), (_, b) = worlds
    others = {}
    for r in records_of(b):
        others.setdefault(r["family"], []).append(r)
    for i, r in enumerate(records_of(a)):
        other = others[r["family"]][i % len(others[r["family"]])]
        swapped = {**other, "messages": r["messages"]}
        for answer in (r["ideal"], other["ideal"], "", "Sure! 3 + 2 = 5.", "gorf"):
            assert verify(swapped, answer) == verify(r, answer) == verify({"messages": r["messages"]}, answer)
