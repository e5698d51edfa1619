"""Procedural arithmetic: add, subtract, multiply and three-operand expressions, with a verifier.

Categories are an operation and a digit count: ``add2`` (two 2-digit numbers), ``sub3``, ``mul1``,
``chain1`` (three 1-digit numbers and two operations, e.g. ``(4 - 7) * 3`` or ``4 + 7 - 3``).
Operands are drawn from ``0 .. 10**digits - 1``. Train and dev are disjoint by a hash of each
problem's canonical key: keys in the dev bucket (1 in 10) never appear in train. Prompts are
questions in many phrasings (:func:`phrase`): symbols or words ("48 + 27", "48 plus 27"), a question
form ("What is ...?", "Compute ....", "... ="), asked bare or framed as a Q/A or a question/answer
pair, so that what the model learns does not hang on one wording; the dev set is drawn from the same
mix, so the loop measures it. The GPT-3 arithmetic sets are never used here; pass their keys as
``exclude`` to keep them out of every stream.

A share of the 36 templates (``heldout_phrasing_share``, 1 in 4 by default; :func:`heldout_templates`
picks them by hash) is never used for train or dev prompts: the ``heldout_phrasing`` split asks the dev
problems in those templates only, so an evaluation measures whether a gain holds on wordings the
loop never trained on, beside the ordinary dev split.

>>> task = ArithmeticTask(categories=("add2",))
>>> [item] = task.items("train", 1, seed=0)
>>> task.verify(item, f"The answer is {item.answer}.")
True
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections import Counter  # noqa: F401 (doctest)
from collections.abc import Collection, Sequence
from typing import NamedTuple

from selfimprove.runtime.extract import last_integer
from selfimprove.runtime.tasks.base import HELDOUT_PHRASING, SPLITS, Item, Split, Task, TooFewProblems
from selfimprove.runtime.tasks.tactics import WorkedTactics
from selfimprove.runtime.tasks.worked import Plan, plan

OPS = {"add": "+", "sub": "-", "mul": "*"}
DEFAULT_CATEGORIES = ("add1", "add2", "add3", "sub2", "sub3", "mul1", "mul2", "chain1")
DEV_BUCKETS = 10  # one key in DEV_BUCKETS is dev
QUESTIONS = (
    "What is {x}?",
    "Compute {x}.",
    "Calculate {x}.",
    "What is the value of {x}?",
    "How much is {x}?",
    "{x} =",
)
FRAMES = ("{q}", "{q}", "Q: {q}\n\nA:", "Question: {q}\nAnswer:")  # half of the prompts bare
_WORDS = {"+": "plus", "-": "minus", "*": "times"}


def in_words(expr: str) -> str:
    """An expression with its operators spelled out, as the task's word prompts ask it.

    >>> in_words("86 + 29"), in_words("53 - 55 * 2"), in_words("-50 + 75")
    ('86 plus 29', '53 minus 55 times 2', '-50 plus 75')
    """
    return re.sub(r"(?<= )[+\-*](?= )", lambda m: _WORDS[m.group(0)], expr)


class Template(NamedTuple):
    """One way of asking: a :data:`QUESTIONS` entry, a distinct :data:`FRAMES` entry, and whether the
    operators are spelled as words."""

    question: str
    frame: str
    words: bool

    def render(self, expr: str) -> str:
        r"""``expr`` asked in this template.

        >>> Template("How much is {x}?", "Q: {q}\n\nA:", True).render("86 + 29")
        'Q: How much is 86 plus 29?\n\nA:'
        """
        return self.frame.format(q=self.question.format(x=in_words(expr) if self.words else expr))

    def fits(self, expr: str) -> bool:
        """Whether the template can ask ``expr`` (no words for an expression in parentheses)."""
        return not (self.words and "(" in expr)


TEMPLATES = tuple(
    Template(q, f, w) for f in dict.fromkeys(FRAMES) for w in (False, True) for q in QUESTIONS
)  # 3 frames x 2 spellings x 6 questions


def _rank(t: Template) -> bytes:
    return hashlib.sha256(f"{t.question}|{t.frame}|{'words' if t.words else 'symbols'}".encode()).digest()


def heldout_templates(share: float) -> frozenset[Template]:
    r"""The templates held out of train and dev prompts: in each frame, ``share`` of its 12 templates
    (at least one when ``share`` > 0), the half rounded up in symbols (which every expression fits) and
    the rest in words, each the lowest by a hash of the template. Pure: the same share, the same set.

    >>> held = heldout_templates(0.25)
    >>> len(held), sorted({t.frame for t in held}) == sorted(set(FRAMES)), sum(t.words for t in held)
    (9, True, 3)
    >>> sorted(t.render("86 + 29") for t in held if t.frame == "{q}")
    ['86 + 29 =', 'Compute 86 plus 29.', 'How much is 86 + 29?']
    >>> len(heldout_templates(0.0)), len(heldout_templates(0.5))
    (0, 18)
    >>> heldout_templates(0.9)
    Traceback (most recent call last):
    ...
    ValueError: heldout_phrasing_share must be from 0 to 0.5, got 0.9
    """
    if not 0 <= share <= 0.5:
        raise ValueError(f"heldout_phrasing_share must be from 0 to 0.5, got {share}")
    if share == 0:
        return frozenset()
    per_frame = len(TEMPLATES) // len(set(FRAMES))
    k = max(1, round(share * per_frame))
    held: list[Template] = []
    for frame in dict.fromkeys(FRAMES):
        for words, count in ((False, (k + 1) // 2), (True, k // 2)):
            cell = sorted((t for t in TEMPLATES if t.frame == frame and t.words == words), key=_rank)
            held += cell[:count]
    return frozenset(held)


def phrase(expr: str, rng: random.Random, templates: Collection[Template] = TEMPLATES) -> str:
    r"""A prompt for ``expr`` in one of ``templates`` (default: every one of :data:`TEMPLATES`, 2 x 6 x 3
    distinct prompts): operators as symbols or words (not in parentheses), one of :data:`QUESTIONS`,
    one of :data:`FRAMES`; three draws from ``rng`` whatever ``templates`` is, so the problems drawn
    after it do not depend on it. A draw outside ``templates`` is asked in one of them instead, of the
    same frame and spelling where there is one, chosen by a hash of the expression and the draw.

    >>> rng = random.Random(3)
    >>> sorted({phrase("86 + 29", rng) for _ in range(200)})[:3]
    ['86 + 29 =', '86 plus 29 =', 'Calculate 86 + 29.']
    >>> len({phrase("86 + 29", rng) for _ in range(2000)}), phrase("(4 - 7) * 3", random.Random(0))
    (36, 'What is the value of (4 - 7) * 3?')
    >>> held = heldout_templates(0.25)
    >>> kept = [t for t in TEMPLATES if t not in held]
    >>> len({phrase("86 + 29", rng, kept) for _ in range(2000)}), len({phrase("86 + 29", rng, held) for _ in range(500)})
    (27, 9)
    """
    words = rng.random() < 0.5 and "(" not in expr
    drawn = Template(rng.choice(QUESTIONS), rng.choice(FRAMES), words)
    if drawn in templates:
        return drawn.render(expr)
    pool = [t for t in templates if t.fits(expr)]
    if not pool:
        raise ValueError(f"no template of the {len(templates)} given can ask {expr!r}")
    cell = [t for t in pool if (t.frame, t.words) == (drawn.frame, drawn.words)]
    same_frame = [t for t in pool if t.frame == drawn.frame]
    choice = random.Random(f"{expr}|{drawn.question}|{drawn.frame}|{words}").choice(
        cell or same_frame or pool
    )
    return choice.render(expr)


def phrasing(prompt: str) -> tuple[str, str]:
    r"""The frame of a prompt, named from :data:`FRAMES` (``bare``, ``Q/A``, ``Question/Answer``), and
    the operators' spelling (``symbols`` or ``words``).

    >>> phrasing("Q: What is 86 plus 29?\n\nA:"), phrasing("53 - 55 ="), phrasing("Question: Compute 4 - 2.\nAnswer:")
    (('Q/A', 'words'), ('bare', 'symbols'), ('Question/Answer', 'symbols'))
    """
    frame = "bare"
    for template in set(FRAMES) - {"{q}"}:
        head, tail = template.split("{q}")
        if prompt.startswith(head) and prompt.endswith(tail):
            frame = f"{head.strip().rstrip(':')}/{tail.strip().rstrip(':')}"
    return frame, "words" if any(f" {w} " in prompt for w in _WORDS.values()) else "symbols"


Key = tuple[str, tuple[int, ...]]


def canonical_key(expression: str) -> Key:
    """``(operator, operands)`` of an expression: the operator alone for one operation, else the
    expression's shape with ``_`` for numbers.

    >>> canonical_key("48 + 27")
    ('+', (48, 27))
    >>> canonical_key("(9 + 8) * 2")
    ('(_+_)*_', (9, 8, 2))
    """
    compact = expression.replace(" ", "")
    operands = tuple(int(x) for x in re.findall(r"\d+", compact))
    shape = re.sub(r"\d+", "_", compact)
    return (shape[1] if shape in ("_+_", "_-_", "_*_") else shape), operands


def split_of(key: Key) -> Split:
    """The split a problem belongs to, fixed by the hash of its canonical key."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return "dev" if int.from_bytes(digest[:8], "big") % DEV_BUCKETS == 0 else "train"


def parse_category(category: str) -> tuple[str, int]:
    """``"add2"`` -> ``("add", 2)``; raises ``ValueError`` for unknown names."""
    m = re.fullmatch(r"(add|sub|mul|chain)([1-9])", category)
    if not m:
        raise ValueError(f"unknown arithmetic category {category!r}: expected add|sub|mul|chain + digits 1-9")
    return m.group(1), int(m.group(2))


def make_expression(category: str, rng: random.Random) -> str:
    """A random problem of ``category`` as an expression string."""
    op, digits = parse_category(category)
    top = 10**digits - 1

    def num() -> int:
        return rng.randint(0, top)

    if op != "chain":
        return f"{num()} {OPS[op]} {num()}"
    o1, o2 = rng.choice("+-*"), rng.choice("+-*")
    a, b, c = num(), num(), num()
    return f"({a} {o1} {b}) {o2} {c}" if rng.random() < 0.5 else f"{a} {o1} {b} {o2} {c}"


def evaluate(expression: str) -> int:
    """The value of an expression of integers, ``+ - *`` and parentheses.

    >>> evaluate("(4 - 7) * 3"), evaluate("4 + 7 * 3")
    (-9, 25)
    """
    if not re.fullmatch(r"[\d\s+\-*()]+", expression):
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    return int(eval(expression, {"__builtins__": {}}))  # noqa: S307 - digits, operators, parentheses only


# an expression of integers and + - * (at least one operation), "=", a signed integer or a negated
# expression in parentheses (a difference turned round: "23 - 61 = -(61 - 23)")
_OPERATIONS = r"\d+(?:\s*[+*-]\s*-?\d+)+"
EQUATION = re.compile(rf"(?<![\d.)])(-?{_OPERATIONS})\s*=\s*(-\({_OPERATIONS}\)|-?\d+(?![\d.(]))")


def equations(text: str) -> list[bool]:
    """Whether each equation stated in ``text`` is true, in order; the whole left side counts.

    >>> equations("61 - 20 = 41, 41 - 3 = 38, so the answer is -38.")
    [True, True]
    >>> equations("34 - 55 = 10, then 10 - 5 = 5"), equations("The answer is 5.")
    ([False, True], [])
    >>> equations("4 + 7 - 3 = 8 and 2 * 3 = 6"), equations("82 + 80 = 80 + 8 = 16"), equations("(4 - 7) * 3 = -9")
    ([True, True], [False], [])
    >>> equations("23 - 61 = -(61 - 23): 61 - 20 = 41"), equations("23 - 61 = -(16 - 23)")
    ([True, True], [False])
    """
    return [evaluate(left) == evaluate(right) for left, right in EQUATION.findall(text)]


def equations_true(text: str) -> bool:
    """Whether ``text`` states at least one equation and every one is true.

    >>> equations_true("61 - 20 = 41, 41 - 3 = 38"), equations_true("61 - 20 = 40"), equations_true("38")
    (True, False, False)
    """
    found = equations(text)
    return bool(found) and all(found)


class ArithmeticTask(Task):
    """The built-in arithmetic family (task name ``"arithmetic"``)."""

    name = "arithmetic"
    tactics_model = WorkedTactics  # sums and differences have worked plans and check questions

    def __init__(
        self,
        categories: Sequence[str] = DEFAULT_CATEGORIES,
        exclude: Collection[Key] = (),
        heldout_phrasing_share: float = 0.25,
    ) -> None:
        for c in categories:
            parse_category(c)
        self._categories = tuple(categories)
        self.exclude = frozenset(exclude)
        self.heldout = heldout_templates(heldout_phrasing_share)
        self.trained = tuple(t for t in TEMPLATES if t not in self.heldout)  # train and dev prompts

    def heldout_wording(self, prompt: str) -> bool:
        r"""Whether ``prompt`` is one of the held-out templates around any expression.

        >>> task = ArithmeticTask(("add2",))
        >>> [held] = task.items("heldout_phrasing", 1, seed=0)
        >>> task.heldout_wording(held.prompt), task.heldout_wording("Q: What is 86 plus 29?\n\nA:")
        (True, False)
        >>> ArithmeticTask(heldout_phrasing_share=0).heldout_wording(held.prompt)
        False
        """
        return any(pattern.fullmatch(prompt.strip()) for pattern in self._heldout_patterns)

    @functools.cached_property
    def _heldout_patterns(self) -> tuple[re.Pattern[str], ...]:
        mark = "\x00"
        return tuple(
            re.compile(
                re.escape(t.frame.format(q=t.question.format(x=mark)).strip()).replace(mark, ".+"), re.S
            )
            for t in self.heldout
        )

    @property
    def splits(self) -> tuple[Split, ...]:
        """Train, dev, and ``heldout_phrasing`` unless ``heldout_phrasing_share`` is 0.

        >>> ArithmeticTask().splits, ArithmeticTask(heldout_phrasing_share=0).splits
        (('train', 'dev', 'heldout_phrasing'), ('train', 'dev'))
        """
        return (*SPLITS, HELDOUT_PHRASING) if self.heldout else SPLITS

    @property
    def categories(self) -> tuple[str, ...]:
        return self._categories

    def items(self, split: Split, n: int, seed: int = 0, difficulty: int | None = None) -> list[Item]:
        r"""``n`` distinct problems of ``split``, cycling over the categories (only those with
        ``difficulty`` digits when given); a category with no new problem left drops out of the cycle.
        ``heldout_phrasing`` gives the dev split's problems (the same, for the same seed) asked in the
        held-out templates only; train and dev prompts never use those.

        >>> cats = Counter(i.category for i in ArithmeticTask(("add1", "add2")).items("dev", 40))
        >>> cats["add1"] < 20 < cats["add2"], sum(cats.values())
        (True, 40)
        >>> task = ArithmeticTask(("sub2",))
        >>> [d], [h] = task.items("dev", 1, seed=5), task.items("heldout_phrasing", 1, seed=5)
        >>> d.prompt, h.prompt, d.meta == h.meta
        ('What is 65 - 45?', '65 - 45 =', True)
        """
        if split not in self.splits:
            raise ValueError(f"arithmetic task has no {split!r} split (it has {', '.join(self.splits)})")
        cats = [c for c in self._categories if difficulty is None or parse_category(c)[1] == difficulty]
        if not cats:
            raise ValueError(f"no category of {self._categories} has difficulty {difficulty}")
        problems: Split = "dev" if split == HELDOUT_PHRASING else split
        templates = self.heldout if split == HELDOUT_PHRASING else self.trained
        rngs = {c: random.Random(f"{seed}:{problems}:{c}") for c in cats}
        seen: set[Key] = set()
        out: list[Item] = []
        live = list(cats)  # a small category (about 10 dev problems per 1-digit one) runs out first
        i = 0
        while len(out) < n:
            if not live:
                raise TooFewProblems(
                    f"categories {list(cats)} have too few distinct {split} problems for n={n} (they have {len(out)})",
                    out,
                )
            cat = live[i % len(live)]
            for _attempt in range(10_000):
                expr = make_expression(cat, rngs[cat])
                key = canonical_key(expr)
                if split_of(key) == problems and key not in self.exclude and key not in seen:
                    break
            else:
                live.remove(cat)
                continue
            seen.add(key)
            out.append(self._item(expr, key, cat, rngs[cat], templates))
            i += 1
        return out

    def _item(
        self,
        expr: str,
        key: Key,
        category: str,
        rng: random.Random,
        templates: Collection[Template] | None = None,
    ) -> Item:
        return Item(
            id=hashlib.sha256(repr(key).encode()).hexdigest()[:16],
            prompt=phrase(expr, rng, self.trained if templates is None else templates),
            category=category,
            difficulty=parse_category(category)[1],
            answer=str(evaluate(expr)),
            meta={"operator": key[0], "operands": key[1], "key": key, "expression": expr},
        )

    def extract(self, reply: str) -> str | None:
        value = last_integer(reply)
        return None if value is None else str(value)

    def verify(self, item: Item, reply: str) -> bool | None:
        """The right final answer, and no false equation on the way (a worked reply's steps are checked).

        >>> task = ArithmeticTask(("sub2",))
        >>> [item] = task.items("train", 1)
        >>> a, b = item.meta["operands"]
        >>> task.verify(item, f"{a} - {b} = {a - b}."), task.verify(item, f"{a} - {b} = {a - b + 1}, so {a - b}.")
        (True, False)
        """
        return super().verify(item, reply) and all(equations(reply))

    def worked_plan(self, item: Item) -> Plan | None:
        """The tens, then the ones (:mod:`.worked`); ``None`` for products and three operands."""
        return plan(item.meta)

    def check_item(self, item: Item, label: str) -> Item | None:
        """The question that checks ``label``: a sum asked again with its operands swapped (the label
        again), a difference undone by a sum (``a - b = c`` asks ``c + b``, expecting ``a``), in a
        phrasing of its own; ``None`` for products, three operands, or a label that is no integer.
        Only the question's operands and the label are used, never the reference answer.

        >>> task = ArithmeticTask(("add2", "sub2"))
        >>> add, sub = task.items("train", 2, seed=0)
        >>> add.meta["expression"], task.check_item(add, "7").meta["expression"], task.check_item(add, "7").answer
        ('86 + 79', '79 + 86', '7')
        >>> sub.meta["expression"], task.check_item(sub, "-12").meta["expression"], task.check_item(sub, "-12").answer
        ('25 - 75', '-12 + 75', '25')
        >>> task.check_item(add, "many") is None, task.check_item(add, "7").prompt == task.check_item(add, "7").prompt
        (True, True)
        """
        op, operands = item.meta.get("operator"), tuple(item.meta.get("operands") or ())
        if op not in ("+", "-") or len(operands) != 2 or not re.fullmatch(r"-?\d+", label.strip()):
            return None
        a, b = operands
        value = int(label)
        expression, expects = (f"{b} + {a}", value) if op == "+" else (f"{value} + {b}", a)
        return Item(
            id=f"{item.id}.check",
            prompt=phrase(expression, random.Random(f"check:{item.id}:{label}"), self.trained),
            category=item.category,
            difficulty=item.difficulty,
            answer=str(expects),
            meta={"expression": expression},
        )

    def _step_template(self) -> Template:
        """How sub-questions are asked: "What is ...?", or the first trained bare template in symbols
        when that one is held out (sub-questions are trained on)."""
        plain = Template(QUESTIONS[0], "{q}", False)
        if plain not in self.heldout:
            return plain
        return next(t for t in self.trained if t.frame == "{q}" and not t.words)

    def step_item(self, parent: Item, expression: str, step: int) -> Item:
        """A plan's sub-question as a plain item of ``parent``'s category, marked ``meta["step"]``;
        its key is the sub-question's, so selection drops it when it is a dev or evaluation problem.

        >>> [item] = ArithmeticTask(("sub2",)).items("train", 1, seed=0)
        >>> s = ArithmeticTask(("sub2",)).step_item(item, "61 - 20", 1)
        >>> s.prompt, s.answer, s.meta["key"], s.meta["step"], s.id == f"{item.id}.s1"
        ('What is 61 - 20?', '41', ('-', (61, 20)), 1, True)
        """
        key = canonical_key(expression)
        return Item(
            id=f"{parent.id}.s{step}",
            prompt=self._step_template().render(expression),
            category=parent.category,
            difficulty=parent.difficulty,
            answer=str(evaluate(expression)),
            meta={"operator": key[0], "operands": key[1], "key": key, "expression": expression, "step": step},
        )
