"""
A verifier for the embedded world: the reward a program computes from the prompt's text alone (RLVR).

    from verifier import verify      # ppo.py loads it by path: python ppo.py --reward=data/assistant/verifier.py
    verify({"messages": [{"role": "user", "content": "What is 3 plus 2?"}]}, "3 + 2 = 5.")   # -> 1.0

Since 2024-25 the field rewards what a program can check: Tülu 3's RLVR (Lambert et al. 2024, "Tülu 3": PPO on a
reward of alpha when the answer verifies, 0 otherwise; math answers and IFEval-style format constraints), and
DeepSeekMath / DeepSeek-R1's rule-based rewards for GRPO (Shao et al. 2024; Guo et al. 2025). Unlike labeler.py (the
hidden human, who knows the world's facts), this file reads nothing but the conversation: the operands of a sum, the
word to count or reverse, the system message's constraint. It never sees the world's facts nor a record's ideal,
key or other fields, so it cannot judge knowledge, two-part, unknown-quantity or harmful requests: for those it
returns None. Rules, each 1.0 when met and 0.0 otherwise:
 1. A sum ("What is 3 plus 2?", "Add 3 and 2."): the answer's last number is the sum, and every number in it is an
    operand or the sum ("3 + 2 = 5." and "5" pass; "5. 2 + 2 = 4." and "3 + 2 = 6." do not). The last number is the
    answer, as GSM8K's and nanochat's checkers take the final number.
 2. A letter count ("How many letters are in the word frog?"): the last number is the word's length, and no other
    number appears.
 3. A reversal ("Reverse the word frog."): the answer's last word is the reversed word ("gorf",
    "Spelled backwards, frog is gorf.").
 4. A system message's constraint (prepare.CONSTRAINTS, on any conversation: a constraint stays in force): "Begin
    every answer with Certainly!" -> it starts with "Certainly!"; "Write only in lowercase letters." -> it is not
    empty and has no capital; "Put your whole answer in double quotes." -> it starts and ends with '"'. Only the form
    is checked: the fact inside is for the labeler, or for the RM, to judge.
 5. A conversation with several checks (a constrained sum) passes when all of them do; with none, None.
What a program can check is what a policy can satisfy without being right in any other way ("Certainly! The moon
is cheese." passes 4): that is the verifier's honesty, not a flaw; ppo.py adds it to an RM's score (Tülu 3's mix)
or, alone, trains only on the prompts it verifies.
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # the world's question templates live beside this file; ppo.py loads it by path
    sys.path.insert(0, HERE)
from prepare import CONSTRAINTS, COUNT_QUESTIONS, REVERSE_QUESTIONS, SUM_QUESTIONS  # noqa: E402


def pattern(template):
    """A question template ("What is {x} plus {y}?") as a regex matching the whole question: {x}, {y} numbers, {w}
    a word."""
    rx = re.escape(template)
    for name, group in (("x", r"(?P<x>\d+)"), ("y", r"(?P<y>\d+)"), ("w", r"(?P<w>[A-Za-z]+)")):
        rx = rx.replace(re.escape("{" + name + "}"), group)
    return re.compile(rx + r"\Z")


SUMS = [pattern(t) for t in SUM_QUESTIONS]
COUNTS = [pattern(t) for t in COUNT_QUESTIONS]
REVERSALS = [pattern(t) for t in REVERSE_QUESTIONS]
KINDS = {text: kind for kind, text in CONSTRAINTS.items()}  # a system message's text -> its constraint


def numbers(text):
    return [int(n) for n in re.findall(r"\d+", text)]


def check_question(question, response):
    """(1-3) 1.0 / 0.0 for a sum, count or reversal question; None for any other question."""
    q = question.strip()
    for rx in SUMS:
        if m := rx.match(q):
            x, y = int(m["x"]), int(m["y"])
            got = numbers(response)
            return float(bool(got) and got[-1] == x + y and set(got) <= {x, y, x + y})
    for rx in COUNTS:
        if m := rx.match(q):
            got = numbers(response)
            return float(bool(got) and set(got) == {len(m["w"])})
    for rx in REVERSALS:
        if m := rx.match(q):
            words = re.findall(r"[A-Za-z]+", response)
            return float(bool(words) and words[-1] == m["w"][::-1])
    return None


def check_constraint(kind, response):
    """(4) 1.0 / 0.0: does the answer have the form the system message asks for?"""
    text = response.strip()
    if kind == "certainly":
        return float(text.startswith("Certainly!"))
    if kind == "lowercase":
        return float(bool(text) and text == text.lower())  # "0 + 3 = 3." too: a sum under the system message
    return float(len(text) >= 2 and text[0] == '"' and text[-1] == '"')


def verify(record, response):
    """(5) The verifier's reward for response as the answer to record's conversation ("messages", the last one the
    user's): 1.0 or 0.0, or None when nothing in the conversation's text can be checked. Reads only the messages."""
    messages = record["messages"]
    checks = [check_question(messages[-1]["content"], response)]
    for m in messages:
        if m["role"] == "system" and m["content"].strip() in KINDS:
            checks.append(check_constraint(KINDS[m["content"].strip()], response))
    checks = [c for c in checks if c is not None]
    return min(checks) if checks else None
