"""The transformers backend of the engine interface, tuned for many short answers on a CPU.

``model.generate`` runs every batch until its longest sequence stops and pads every row to the
longest prompt. This engine runs its own decode loop over a KV cache instead:

- continuous batching: up to ``batch_size`` sequences decode together; a sequence that ends
  (end-of-turn or a stop string) leaves the batch and its KV cache rows at once, and waiting
  prompts (taken shortest first) are prefilled and join the running batch in its free rows;
- the ``n`` samples of a prompt share one prefill, its cache rows repeated ``n`` times, and the
  prefix all prompts of a group share (the chat template's system prompt) is encoded once;
- only the last position's logits are computed, and top-p sorts only the top candidates.

Rows are laid out as ``[left padding][shared prefix][padding][rest of prompt][generated]`` with an
attention mask and explicit position ids, so padding never shifts a position.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from selfimprove.runtime.engine import (
    GenerationRequest,
    Prompt,
    PromptResult,
    Sample,
    SamplingParams,
    to_messages,
)
from selfimprove.runtime.models import stop_token_ids
from selfimprove.runtime.stopping import common_prefix_len, cut_at_stop, first_stop


class TransformersEngine:
    """Engine over an in-process transformers causal LM (see the module docstring)."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        batch_size: int = 128,
        threads: int | None = None,
        share_prefix: bool = True,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.pad_id = tokenizer.pad_token_id
        self.end_ids = set(stop_token_ids(model, tokenizer))

    @classmethod
    def load(
        cls,
        base: str = "smollm2-135m-instruct",
        adapters: Sequence[str | Path] = (),
        *,
        dtype: str = "float32",
        threads: int | None = None,
        batch_size: int = 128,
        cache_dir: Path | None = None,
    ) -> TransformersEngine:
        from selfimprove.runtime.models import load_model

        if threads:
            torch.set_num_threads(threads)
        model, tokenizer = load_model(base, adapters, dtype=dtype, cache_dir=cache_dir)
        return cls(model, tokenizer, batch_size=batch_size, threads=threads)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt in the chat template, ready for the assistant's turn."""
        ids = self.tokenizer.apply_chat_template(
            to_messages(prompt), add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def generate(self, request: GenerationRequest) -> list[PromptResult]:
        params = request.params
        ids = [self.encode(p) for p in request.prompts]
        run = _Run(self, ids, params, request.on_done)
        run.loop()
        n = params.n
        return [
            PromptResult(samples=tuple(run.done[i * n + k] for k in range(n)), prompt_tokens=len(ids[i]))
            for i in range(len(ids))
        ]

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _finish(self, ids: list[int], logps: list[float], params: SamplingParams, reason) -> Sample:
        body = ids[:-1] if ids and ids[-1] in self.end_ids else ids
        text, _ = cut_at_stop(self._text(body), params.stop)
        return Sample(
            text=text,
            tokens=len(ids),
            finish_reason=reason,
            logprobs=tuple(logps) if params.logprobs else None,
        )


class _Run:
    """The decode state of one request: live rows, their cache, mask and next positions."""

    def __init__(
        self,
        engine: TransformersEngine,
        prompts: list[list[int]],
        params: SamplingParams,
        on_done: Callable[[int], None] | None = None,
    ) -> None:
        self.e, self.prompts, self.p, self.on_done = engine, prompts, params, on_done
        self.unfinished = [params.n] * len(prompts)  # samples still decoding, per prompt
        self.queue = deque(sorted(range(len(prompts)), key=lambda i: len(prompts[i])))
        self.generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        self.end_ids = torch.tensor(sorted(engine.end_ids))
        self.tokens: list[list[int]] = [[] for _ in range(len(prompts) * params.n)]
        self.logps: list[list[float]] = [[] for _ in self.tokens]
        self.done: dict[int, Sample] = {}
        self.cache = None
        self.mask = torch.zeros((0, 0), dtype=torch.long)
        self.pos = torch.zeros(0, dtype=torch.long)
        self.live = torch.zeros(0, dtype=torch.long)  # row -> sample index
        self.last = torch.zeros(0, dtype=torch.long)  # token each row feeds next

    @torch.inference_mode()
    def loop(self) -> None:
        size, n = self.e.batch_size, self.p.n
        while self.queue or len(self.live):
            free = size - len(self.live)
            if self.queue and (not len(self.live) or free >= max(n, size // 4)):
                group = [self.queue.popleft() for _ in range(min(len(self.queue), max(1, free // n)))]
                self._admit(group)
                continue
            self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.live), 1))], dim=1)
            logits = self.e.model(
                input_ids=self.last[:, None],
                attention_mask=self.mask,
                position_ids=self.pos[:, None],
                cache=self.cache,
                use_cache=True,
            ).logits[:, -1, :]
            self.pos = self.pos + 1
            self._keep(self._step(self.live, logits))

    def _admit(self, group: list[int]) -> None:
        """Prefill ``group``'s prompts and add their ``n`` rows each to the running batch."""
        from transformers import DynamicCache

        e, n, prompts = self.e, self.p.n, [self.prompts[i] for i in group]
        b, cache = len(prompts), DynamicCache()
        shared = min(common_prefix_len(prompts), min(len(p) for p in prompts) - 1) if e.share_prefix else 0
        if shared > 0:
            e.model(
                input_ids=torch.tensor([prompts[0][:shared]]), cache=cache, use_cache=True, logits_to_keep=1
            )
            cache.batch_repeat_interleave(b)
        width = max(len(p) for p in prompts) - shared
        input_ids = torch.full((b, width), e.pad_id, dtype=torch.long)
        mask = torch.zeros((b, shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for row, p in enumerate(prompts):
            rest = p[shared:]
            input_ids[row, width - len(rest) :] = torch.tensor(rest)
            mask[row, shared + width - len(rest) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = e.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions[:, shared:],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
        rows = torch.tensor([i * n + k for i in group for k in range(n)])
        self._merge(cache, mask, mask.sum(-1), rows)
        self.last = torch.cat([self.last, torch.zeros(len(rows), dtype=torch.long)])
        keep = self._step(self.live[-len(rows) :], logits, offset=len(self.live) - len(rows))
        self._keep(list(range(len(self.live) - len(rows))) + keep)

    def _merge(self, cache, mask: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor) -> None:
        """Append new rows to the batch, left-padding whichever side is shorter."""
        if self.cache is None or not len(self.live):
            self.cache, self.mask, self.pos, self.live = cache, mask, pos, rows
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width, 2), _pad_left(new.keys, width, 2)])
            old.values = torch.cat([_pad_left(old.values, width, 2), _pad_left(new.values, width, 2)])
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)])
        self.pos, self.live = torch.cat([self.pos, pos]), torch.cat([self.live, rows])

    def _step(self, rows: torch.Tensor, logits: torch.Tensor, offset: int = 0) -> list[int]:
        """Sample the next token of ``rows``; finish ended rows; return the positions that go on."""
        p = self.p
        chosen = _sample(logits, p, self.generator)
        self.last[offset : offset + len(rows)] = chosen
        lp = (
            torch.log_softmax(logits.float(), -1).gather(1, chosen[:, None])[:, 0].tolist()
            if p.logprobs
            else None
        )
        ended = torch.isin(chosen, self.end_ids).tolist()
        keep = []
        for j, (sample, tok) in enumerate(zip(rows.tolist(), chosen.tolist(), strict=True)):
            self.tokens[sample].append(tok)
            if lp is not None:
                self.logps[sample].append(lp[j])
            stopped = bool(p.stop) and first_stop(self.e._text(self.tokens[sample]), p.stop) >= 0
            if ended[j] or stopped:
                self.done[sample] = self.e._finish(self.tokens[sample], self.logps[sample], p, "stop")
            elif len(self.tokens[sample]) >= p.max_new_tokens:
                self.done[sample] = self.e._finish(self.tokens[sample], self.logps[sample], p, "length")
            else:
                keep.append(offset + j)
                continue
            self.unfinished[sample // p.n] -= 1
            if self.on_done is not None and self.unfinished[sample // p.n] == 0:
                self.on_done(1)
        return keep

    def _keep(self, keep: list[int]) -> None:
        """Drop every row not in ``keep`` from the batch and the cache, then trim dead columns."""
        if len(keep) == len(self.live):
            return
        idx = torch.tensor(keep, dtype=torch.long)
        self.live, self.mask, self.pos, self.last = (
            self.live[idx],
            self.mask[idx],
            self.pos[idx],
            self.last[idx],
        )
        if not keep:
            self.cache = None
            return
        self.cache.batch_select_indices(idx)
        lead = int((self.mask.sum(0) > 0).int().argmax())
        if lead > 0:
            self.mask = self.mask[:, lead:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zero-pad ``t`` on the left of dimension ``dim`` up to ``width``."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _sample(logits: torch.Tensor, params: SamplingParams, generator) -> torch.Tensor:
    """Next token per row: argmax at temperature 0, else nucleus sampling."""
    if params.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / params.temperature, -1)
    if params.top_p < 1:
        # Sorting 49k probabilities per row is slow; the top 256 almost always hold top_p of the mass.
        sorted_p, sorted_i = probs.topk(min(256, probs.shape[-1]), -1)
        if bool((sorted_p.sum(-1) < params.top_p).any()):
            sorted_p, sorted_i = probs.sort(-1, descending=True)
        # keep the smallest set whose mass reaches top_p (always at least the top token)
        outside = sorted_p.cumsum(-1) - sorted_p >= params.top_p
        sorted_p = sorted_p.masked_fill(outside, 0)
        return sorted_i.gather(1, torch.multinomial(sorted_p, 1, generator=generator))[:, 0]
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
