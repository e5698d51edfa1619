"""Response-token losses that never build the full logits tensor.

A causal LM's cost on a CPU is dominated by the 49k-vocabulary output layer. Only response tokens
carry a label, so the decoder's hidden states are computed for every position but the output layer
runs only on the positions whose next token is learned (or scored).

Every example of a batch starts with the same tokens (the chat template's system prompt: about 20
of a 48-token arithmetic example). :func:`shared_prefix_len` finds them; the decoder runs them once,
its key/value cache is repeated over the batch, and the rows continue from there. The gradient flows
back through the repeated cache, so the loss and its gradient are the same as running every row in
full (up to float rounding), and a batch of 8 processes about 40 % fewer tokens. One difference: LoRA
dropout on the shared positions draws one mask for the batch instead of one per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from selfimprove.runtime.stopping import common_prefix_len
from selfimprove.trainer.batches import IGNORE, Encoded, collate

MIN_SHARED = 4  # a shorter common prefix is not worth a separate decoder pass


def _causal(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_and_head(causal) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack of a causal LM and its output layer, found by the model's own names
    (``base_model_prefix``: ``model`` of a Llama or Qwen2, ``gpt_neox`` of a GPT-NeoX, ...), so the
    losses run on any architecture transformers loads with ``AutoModelForCausalLM``."""
    decoder = getattr(causal, "base_model", causal)
    head = causal.get_output_embeddings() if hasattr(causal, "get_output_embeddings") else None
    if decoder is causal or head is None:
        raise TypeError(
            f"{type(causal).__name__} does not name its decoder (base_model_prefix) and output layer "
            "(get_output_embeddings); the trainer's losses need both"
        )
    return decoder, head


def shared_prefix_len(ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> int:
    """Leading positions that every row has in common (same ids, not padding) and whose outputs
    nothing learns from; 0 for a single row.

    >>> ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 3, 0]])
    >>> mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    >>> shared_prefix_len(ids, mask, torch.tensor([[-100, -100, -100, 8, 9], [-100, -100, -100, 3, -100]]))
    2
    >>> shared_prefix_len(ids, mask, torch.tensor([[-100, -100, -100, -100, 9], [-100] * 5]))
    3
    """
    if ids.shape[0] < 2:
        return 0
    common = common_prefix_len([row[:n] for row, n in zip(ids.tolist(), mask.sum(1).tolist(), strict=True)])
    learned = (labels != IGNORE).any(0).nonzero()
    first_label = int(learned[0]) if len(learned) else ids.shape[1]
    # the output at position j predicts label j + 1: positions before first_label - 1 teach nothing
    return max(0, min(common, first_label - 1, ids.shape[1] - 1))


def decoder_states(
    model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, share_prefix: bool = True
):
    """``(hidden, targets)``: the decoder's last hidden states from the first position any label
    needs on, and the next-token labels they predict. With ``share_prefix``, a shared prefix of at
    least ``MIN_SHARED`` tokens is run once (see above); without, every row runs in full."""
    decoder, _ = decoder_and_head(_causal(model))
    shared = shared_prefix_len(ids, mask, labels) if share_prefix else 0
    if shared < MIN_SHARED:
        return decoder(input_ids=ids, attention_mask=mask).last_hidden_state, labels[:, 1:]
    from transformers import DynamicCache

    cache = DynamicCache()
    decoder(input_ids=ids[:1, :shared], cache=cache, use_cache=True)
    cache.batch_repeat_interleave(ids.shape[0])
    rest = decoder(input_ids=ids[:, shared:], attention_mask=mask, cache=cache, use_cache=True)
    return rest.last_hidden_state, labels[:, shared + 1 :]


def token_logprobs(
    model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, share_prefix: bool = True
):
    """``(selected, targets, rows)``: output-layer rows at labelled positions, their targets, row index."""
    _, head = decoder_and_head(_causal(model))
    hidden, targets = decoder_states(model, ids, mask, labels, share_prefix)
    keep = targets != IGNORE
    logits = head(hidden[:, :-1][keep]).float()
    rows = torch.arange(ids.shape[0]).unsqueeze(1).expand_as(targets)[keep]
    return logits, targets[keep], rows


def response_loss(model, ids, mask, labels, share_prefix: bool = True) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over response tokens, and their count (``share_prefix``: see
    :func:`decoder_states`)."""
    logits, targets, _ = token_logprobs(model, ids, mask, labels, share_prefix)
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
