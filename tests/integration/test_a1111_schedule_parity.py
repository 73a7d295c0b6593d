"""Prompt editing, alternation, AND and extra-network tags against AUTOMATIC1111 1.10's own code.

Skipped unless ``A1111_MODULES`` names A1111 1.10's ``modules/`` (see ``a1111_harness.py``) holding
``prompt_parser.py`` and ``extra_networks.py``; they run with the real ``lark`` (a test-only dependency).

- schedules: for a seeded corpus of schedule prompts (nesting, alternation, ``when`` as fractions and as
  step numbers, weights inside schedules, unbalanced and stray brackets) and every step count 1..50, the
  schedule (end steps and texts) and the text of every sampling step equal A1111's
  (``get_learned_conditioning_prompt_schedules`` + ``reconstruct_cond_batch``'s rule), exactly;
- AND: sub-prompts and weights equal ``get_multicond_prompt_list``'s;
- tags: the text left after removing tags equals ``extra_networks.parse_prompts``' prompt, 30+ prompts.

Known difference (not in the corpus): on a few heavily malformed prompts where a bracket group that is
itself inside stray brackets can be read two ways, A1111's grammar library settles on a reading that
``prompt_schedule._choose_literals`` does not reproduce (measured: ~0.2% of random bracket soup).
"""

from __future__ import annotations

import copy
import random

import pytest
from a1111_harness import load_prompt_modules, modules_dir

from clip_suite.clip_impl.a1111.extra_networks import find_tags, strip_tags
from clip_suite.clip_impl.a1111.schedule import prompt_schedule, split_and, step_texts

NEEDS_COMFYUI = False
_DIR = modules_dir()
pytestmark = pytest.mark.skipif(
    _DIR is None or not (_DIR / "extra_networks.py").is_file(),
    reason="needs A1111 1.10's modules/ (prompt_parser.py, extra_networks.py, ...): set A1111_MODULES",
)

HAND_PICKED = [
    "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6][: in background:0.25] [shoddy:masterful:0.5]",
    "a [b:3]", "a [b: 3]", "a [[[b]]:2]", "[(a:2):3]", "a [b : c : 1] d", "a[b:[c:d:2]:1]e", "a [unbalanced",
    "a [b:.5] c", "a [{b|d{:.5] c", "((a][:b:c [d:3]", "[a|(b:1.1)]", "[fe|]male", "[fe|||]male",
    "a cat [dog:cat:0.5]", "[cat|dog|bird] in a field", "[[cat|dog]:[bird|fish]:10]", "[a:b:1e1]", "[a:b:1.e1]",
    "[a:b:+5]", "[a:b:-1]", "[a:b:0]", "[a:b:0.0]", "[a:b:1.0]", "[a:b:100]", "[a::0.999]", "[:b:1]",
    "(a [b:c:0.3]:1.2)", "[(a:1.3)|[b]|(c)]", "[a:b:0.5", "a:b:0.5]", "[a|b", "a | b", "a \\", "\\[a:b:2\\]",
    "[a\\|b|c]", "[a:b:c]", "[a:1]::", "[a:1]:::", "[a:1]((", "[a:1]:[b:2]::", "[[a:1]:2]::", "[a|b]::",
    "masterpiece, (best quality:1.2), 1girl, [blonde|silver] hair, [smile::0.3], [:looking at viewer:12] BREAK park",
    "", " ", "[]", "[|]", "[:5]", "(", ")", "[", "]", ":", "a\n[b:c:2]\nd",
]
WORDS = ["cat", "dog", "a red fox", "(best quality:1.2)", "[small]", "((sharp))", "1girl", "in the rain", "BREAK",
         "(wet:0.8)", "embedding_x", "\\(escaped\\)", "sun, sky", "AND", "x"]
WHENS = ["0.5", "0.25", ".3", "1.", "0.99", "1.0", "3", "7", "10", "12", "25", "49", "0", "-1", "1.5", "+2",
         " 4 ", "2e1", "0.1e1", "100"]


def _schedule_prompt(r: random.Random, depth: int = 0) -> str:
    k = r.random()
    if depth < 3 and k < 0.3:
        a, b, when = _schedule_prompt(r, depth + 1), _schedule_prompt(r, depth + 1), r.choice(WHENS)
        return r.choice([f"[{a}:{b}:{when}]", f"[{a}:{when}]", f"[{a}::{when}]", f"[:{b}:{when}]"])
    if depth < 3 and k < 0.45:
        return "[" + "|".join(_schedule_prompt(r, depth + 1) for _ in range(r.randint(1, 4))) + "]"
    if depth < 3 and k < 0.55:
        return f"({_schedule_prompt(r, depth + 1)}{r.choice(['', ':1.3', ':0.7'])})"
    return " ".join(r.choice(WORDS) for _ in range(r.randint(0, 3)))


def _unbalance(r: random.Random, prompt: str) -> str:
    """Drop or add a bracket or colon somewhere (the unbalanced prompts users paste)."""
    chars = list(prompt)
    for _ in range(r.randint(1, 2)):
        spots = [i for i, c in enumerate(chars) if c in "[]():|"]
        if spots and r.random() < 0.5:
            del chars[r.choice(spots)]
        else:
            chars.insert(r.randrange(len(chars) + 1), r.choice("[]():"))
    return "".join(chars)


def corpus(n: int, seed: int = 14, unbalanced: bool = False) -> list[str]:
    r = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = ", ".join(_schedule_prompt(r) for _ in range(r.randint(1, 3)))
        out.append(_unbalance(r, prompt) if unbalanced else prompt)
    return out


class _CachedGrammar:
    """A1111's lark grammar with each prompt parsed once (Earley parsing dominates the run time); A1111
    mutates the tree it gets, so every call receives a fresh copy."""

    def __init__(self, grammar):
        self.grammar, self.trees = grammar, {}

    def parse(self, prompt):
        if prompt not in self.trees:
            try:
                self.trees[prompt] = self.grammar.parse(prompt)
            except Exception as e:  # lark's errors: A1111 catches them and uses the prompt as written
                self.trees[prompt] = e
        tree = self.trees[prompt]
        if isinstance(tree, Exception):
            raise tree
        return copy.deepcopy(tree)


@pytest.fixture(scope="module")
def a1111():
    with load_prompt_modules(_DIR) as (parser, networks):
        original = parser.schedule_parser
        parser.schedule_parser = _CachedGrammar(original)
        try:
            yield parser, networks
        finally:
            parser.schedule_parser = original


def _a1111_step_texts(parser, prompt: str, steps: int) -> list[str]:
    """The text A1111 uses at sampler steps 0..steps-1 (``reconstruct_cond_batch``'s choice of entry)."""
    schedule = parser.get_learned_conditioning_prompt_schedules([prompt], steps)[0]
    out = []
    for step in range(steps):
        out.append(next(text for end, text in schedule if step <= end))
    return out


def _mismatches(parser, prompts, step_counts):
    out = []
    for prompt in prompts:
        for steps in step_counts:
            want = [list(e) for e in parser.get_learned_conditioning_prompt_schedules([prompt], steps)[0]]
            got = [list(e) for e in prompt_schedule(prompt, steps)]
            if got != want or step_texts(prompt, steps) != _a1111_step_texts(parser, prompt, steps):
                out.append((prompt, steps, want[:3], got[:3]))
    return out


def test_schedules_match_a1111_for_steps_1_to_50(a1111):
    parser, _ = a1111
    bad = _mismatches(parser, HAND_PICKED + corpus(100), range(1, 51))
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]}"


def test_unbalanced_schedules_match_a1111(a1111):
    """Schedule prompts with one or two brackets or colons dropped or added, at steps 1, 8, ..., 50."""
    parser, _ = a1111
    prompts = corpus(150, seed=5, unbalanced=True)
    bad = _mismatches(parser, prompts, range(1, 51, 7))
    assert not bad, f"{len({p for p, *_ in bad})} prompts differ, first: {bad[:3]}"


def test_and_matches_a1111(a1111):
    parser, _ = a1111
    prompts = ["a AND b", "a cat :1.5 AND a dog:0.5", "a AND", "AND", "aANDb AND c", "x:2", "x: -0.5 AND y :.5",
               "[a:b:3] AND (c:1.2) :1.1", "a and b", "a\nAND\nb: 3", "a AND b:1.2.3", "a:1.5 ", ""]
    prompts += corpus(100, seed=3)
    for prompt in prompts:
        indexes, flat, _ = parser.get_multicond_prompt_list([prompt])
        want = [(flat[i], w) for i, w in indexes[0]]
        assert split_and(prompt) == want, prompt


TAG_PROMPTS = [
    "a cat <lora:foo:0.8> [dog:cat:0.5] AND a bird",
    "<lora:foo:0.8>", "<lora:foo:0.8>a cat", "a cat<lora:foo:0.8>", "a <lora:foo:0.8> cat", "a  <lora:foo>  cat",
    "<lora:a:1><lora:b:0.5>", "<lyco:bar:0.5:0.3>", "<hypernet:h:1>", "<lora:name with spaces:1>",
    "<lora:x:unet=0.5:te=0.2>", "<kind_2:arg>", "<lora:>", "<:x:1>", "<lora x:1>", "<lora:a>b>", "<<lora:a:1>>",
    "(a <lora:x:1>:1.2)", "[a <lora:x:1>:b:0.5]", "a, <lora:x:1>, b, BREAK <lora:y:0.3> c", "<lora:x:1\n>",
    "<lora:ünï:1> café", "a <lora:x:1 AND b", "<LORA:X:1>", "text <embedding:e:1> more", "<lora:a:1:2:3:4>",
    "\\<lora:a:1>", "<lora:a:1\\>", "<lora:a:0.8>, masterpiece, <lora:b:0.6>, (detailed:1.1)", "no tags at all",
    "<lora:a:1>AND<lora:b:1>",
]


def test_tags_removed_as_a1111_does(a1111):
    _, networks = a1111
    assert len(TAG_PROMPTS) >= 30
    for prompt in TAG_PROMPTS:
        [want], data = networks.parse_prompts([prompt])
        text, tags = strip_tags(prompt)
        assert text == want, prompt
        found = [(t.kind, list(t.args)) for t in tags]
        expected = [(kind, p.items) for kind, params in data.items() for p in params]
        assert sorted(found) == sorted(expected), prompt
        assert find_tags(prompt) == tags
