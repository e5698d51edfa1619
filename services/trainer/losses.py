"""Response-token losses that never build the full logits tensor.

A causal LM's cost on a CPU is dominated by the 49k-vocabulary output layer. Only response tokens
carry a label, so the decoder's hidden states are computed for every position but the output layer
runs only on the positions whose next token is learned (or scored).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from selfimprove.trainer.batches import IGNORE, Encoded, collate


def _causal(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def token_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
    """``(selected, targets, rows)``: log-softmax rows at labelled positions, their targets, row index."""
    causal = _causal(model)
    hidden = causal.model(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = causal.lm_head(hidden[:, :-1][keep]).float()
    rows = torch.arange(ids.shape[0]).unsqueeze(1).expand_as(targets)[keep]
    return logits, targets[keep], rows


def response_loss(model, ids, mask, labels) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over response tokens, and their count."""
    logits, targets, _ = token_logprobs(model, ids, mask, labels)
    return F.cross_entropy(logits, targets, reduction="sum"), int(targets.numel())


@torch.no_grad()
def mean_loss(model, examples: Sequence[Encoded], pad_id: int, batch_size: int = 16) -> float | None:
    """Mean per-token loss over ``examples`` (None when there are none)."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    ordered = sorted(examples, key=lambda e: len(e.ids))
    for start in range(0, len(ordered), batch_size):
        loss, n = response_loss(model, *collate(ordered[start : start + batch_size], pad_id))
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def sequence_logprobs(model, examples: Sequence[Encoded], pad_id: int, batch_size: int = 16) -> list[float]:
    """Summed log-probability of each example's response, in input order."""
    was_training = model.training
    model.eval()
    out: list[float] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        logits, targets, rows = token_logprobs(model, *collate(chunk, pad_id))
        picked = torch.log_softmax(logits, -1).gather(1, targets.unsqueeze(1)).squeeze(1)
        sums = torch.zeros(len(chunk)).index_add_(0, rows, picked)
        out.extend(sums.tolist())
    model.train(was_training)
    return out


def preference_margin(model, chosen: Sequence[Encoded], rejected: Sequence[Encoded], pad_id: int) -> float:
    """Mean of log p(chosen) - log p(rejected) over pairs (higher: the model prefers chosen more)."""
    if not chosen:
        return float("nan")
    good = sequence_logprobs(model, chosen, pad_id)
    bad = sequence_logprobs(model, rejected, pad_id)
    return sum(g - b for g, b in zip(good, bad, strict=True)) / len(good)
