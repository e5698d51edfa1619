"""Turn chat examples into token ids with response-only labels, and group them into batches.

Labels come from lengths, not from pad ids: the prompt (chat template up to the assistant turn) is
masked, every response token up to and including the end-of-turn token is learned, so the model
learns to stop (the pad token of SmolLM2 *is* the end-of-turn token). Batches are length-grouped:
examples are shuffled, cut into buckets, sorted by length inside each bucket and batched there, so
a batch pads only to its own longest row.

>>> ex = [Encoded(list(range(n)), 2) for n in (5, 9, 3, 8, 4, 7)]
>>> [[len(ex[i].ids) for i in b] for b in length_grouped(ex, batch_size=2, bucket_size=6, seed=0)]
[[3, 4], [8, 9], [5, 7]]
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """One example: ``ids`` = prompt then response; the first ``prompt_len`` ids are not learned."""

    ids: list[int]
    prompt_len: int

    @property
    def response_tokens(self) -> int:
        return len(self.ids) - self.prompt_len


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def encode(
    tokenizer, prompt: str, response: str, max_length: int, end_ids: Collection[int] | None = None
) -> Encoded:
    """Chat-template ``prompt`` as the user turn and ``response`` as the assistant turn.

    The response ends with the first end-of-turn token after the prompt (one of ``end_ids``, the
    model's :func:`~selfimprove.runtime.models.stop_token_ids`; the tokenizer's eos when not given);
    whatever the template adds after it (a newline) is dropped. Too long examples lose the end of
    their response.
    """
    user = [{"role": "user", "content": prompt}]
    head = _ids(tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True))
    full = _ids(
        tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=True)
    )
    if full[: len(head)] != head:
        raise ValueError("the chat template does not extend the prompt with the assistant turn")
    ends = set(end_ids) if end_ids is not None else {tokenizer.eos_token_id}
    tail = next((i for i in range(len(head), len(full)) if full[i] in ends), None)
    if tail is not None:
        full = full[: tail + 1]
    return Encoded(full[:max_length], len(head))


def length_grouped(
    examples: Sequence[Encoded], batch_size: int, bucket_size: int, seed: int
) -> list[list[int]]:
    """Indices of ``examples`` in batches: shuffled by ``seed``, sorted by length within buckets,
    batch order shuffled again, so every epoch sees a different but reproducible order."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    bucket = max(bucket_size, batch_size)
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: len(examples[i].ids))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Encoded], pad_id: int):
    """``input_ids``, ``attention_mask`` and ``labels`` tensors, right-padded to the longest row."""
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids)
        mask[row, :n] = 1
        labels[row, e.prompt_len : n] = ids[row, e.prompt_len : n]
    return ids, mask, labels


def split_heldout(n: int, fraction: float, cap: int, seed: int) -> tuple[list[int], list[int]]:
    """``(train, heldout)`` indices of ``n`` examples; at least one train example is kept.

    >>> split_heldout(10, 0.2, 64, seed=1)
    ([1, 2, 3, 4, 5, 6, 8, 9], [0, 7])
    """
    k = min(cap, int(n * fraction), max(0, n - 1))
    order = list(range(n))
    random.Random(f"heldout:{seed}").shuffle(order)
    return sorted(order[k:]), sorted(order[:k])
