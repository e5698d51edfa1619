"""The selection pipeline over acquisition rows: labels, filters, SFT set, preference pairs, data card.

Restated prompts (rows marked ``paraphrase_of``) go through every step as prompts of their own:
rows are taken in id order, so a source prompt (``<id>``) comes before its restatements
(``<id>.p<k>``) and a restatement that is an exact or near duplicate of it, or of another, is the
one dropped (``duplicate_prompt``); its problem key is the source's, so decontamination drops both
together. Order: prompt deduplication, decontamination (exact problem keys of the evaluation sets and the
task's dev split, ``decontaminated_key``; then n-gram overlap with the evaluation sets' texts,
``decontaminated_ngram``), difficulty band, labels (verified or label-free; a
label-free label whose consistency check failed is dropped, ``label_check``),
self-judge (label-free, ``params.self_judge``: the model's own P(Yes) on the majority samples
keeps those it judges right, ``self_judge``, and drops a prompt whose label it doubts,
``self_judge_prompt``; :mod:`~selfimprove.selection.selfjudge`), refined targets, worked replies
(preferred to the model's own right answers; verified mode: when
the verifier accepts them, and a prompt with one is kept at any pass rate; label-free: chosen by the
sub-questions' majorities, when their answer is the label), rationales
(verified mode: hinted replies, for prompts no sample or worked reply answered), format sanity, exact
and near-duplicate responses, responses per prompt,
embedding diversity, category balance. Drops are counted in the unit each filter works on
(``DROP_UNITS``). In label-free mode the rows are :func:`labels.blind` first; the truth is only
read afterwards, for the card's precision figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from selfimprove.contracts.params import SelectParams
from selfimprove.contracts.samples import is_paraphrase, is_step
from selfimprove.selection import filters, labels, selfjudge
from selfimprove.selection.dedup import near_dedup
from selfimprove.selection.diversity import Embedder, greedy_distinct, mean_pairwise_distance

Row = dict[str, Any]
DROP_UNITS = {
    "duplicate_prompt": "prompts",
    "decontaminated_key": "prompts",
    "decontaminated_ngram": "prompts",
    "difficulty": "prompts",
    "label": "prompts",
    "label_check": "prompts",
    "self_judge_prompt": "prompts",
    "self_judge": "responses",
    "format": "responses",
    "duplicate": "responses",
    "near_duplicate": "responses",
    "per_prompt_cap": "responses",
    "diversity": "responses",
    "balance": "prompts",
}


@dataclass
class Selection:
    sft: list[dict]
    pairs: list[dict]
    card: dict


def _keep(items: Sequence, indices: Sequence[int]) -> list:
    return [items[i] for i in indices]


def _refined_sample(text: str, extract: Callable[[str], str | None]) -> dict:
    return {"text": text, "tokens": 0, "finish_reason": "stop", "extracted": extract(text), "refined": True}


def select(
    rows: Sequence[Row],
    mode: str,
    params: SelectParams,
    eval_keys: Collection[tuple] = (),
    embed: Embedder | None = None,
    extract: Callable[[str], str | None] = lambda text: None,
    refined: Sequence[Mapping[str, str]] = (),
    contaminated: Callable[[str], bool] = lambda prompt: False,
) -> Selection:
    """Select from ``rows`` (one per prompt, any shard order); see the module docstring.
    ``eval_keys`` are the exact keys to drop, ``contaminated`` the n-gram rule over prompts."""
    truth = {r["id"]: r.get("answer") for r in rows}
    work = sorted(
        labels.blind(rows) if mode == labels.LABEL_FREE else [dict(r) for r in rows], key=lambda r: r["id"]
    )
    drops = dict.fromkeys(DROP_UNITS, 0)
    prompts_in, samples_in = len(work), sum(len(r["samples"]) for r in work)
    paraphrases_in = sum(is_paraphrase(r) for r in work)

    kept_idx, drops["duplicate_prompt"] = filters.exact_dedup([r["prompt"] for r in work])
    work = _keep(work, kept_idx)
    kept_idx, near = near_dedup([r["prompt"] for r in work], params.prompt_duplicate, params.num_perm)
    work, drops["duplicate_prompt"] = _keep(work, kept_idx), drops["duplicate_prompt"] + near
    work, drops["decontaminated_key"] = filters.decontaminate(work, eval_keys)
    work, drops["decontaminated_ngram"] = filters.drop_overlapping(work, contaminated)

    # verified: a verified hinted or worked reply keeps a prompt at any rate (a worked one below 1
    # unless ``worked_mastered``); label-free rescues none (a worked reply picked by majority counts
    # only when its answer is the label, decided below)
    def rescued(r: Row) -> bool:
        if mode != labels.VERIFIED:
            return False
        worked = bool(labels.worked(r, mode)) and (params.worked_mastered or labels.rate(r, mode) < 1.0)
        return bool(labels.rationales(r)) or worked

    work, drops["difficulty"] = filters.band(work, lambda r: labels.rate(r, mode), *params.band, rescued)

    by_id = {t.get("id"): t["response"] for t in refined if t.get("id")}
    by_prompt = {t["prompt"]: t["response"] for t in refined}
    candidates: list[tuple[Row, dict]] = []
    rejected: dict[str, list[dict]] = {}
    used_labels: dict[str, str | None] = {}
    hinted_ids: set[str] = set()
    worked_ids: set[str] = set()
    judged_ids: set[str] = set()
    for row in work:
        label = labels.label_of(row, mode, params.agreement_threshold)
        if mode == labels.LABEL_FREE and labels.refused(row, label):
            drops["label_check"] += 1
            continue
        right, wrong = labels.split(row, mode, label)
        if mode == labels.LABEL_FREE:
            judged = selfjudge.judge_majority(
                right, params.self_judge, lambda s: filters.sane(s, params.max_tokens, params.max_chars)
            )
            if judged.drop_prompt:
                drops["self_judge_prompt"] += 1
                continue
            drops["self_judge"] += judged.dropped
            right = judged.kept
            if judged.judged:
                judged_ids.add(row["id"])
        target = by_id.get(row["id"]) or by_prompt.get(row["prompt"])
        if target is not None:
            sample = _refined_sample(target, extract)
            wanted = label if mode == labels.LABEL_FREE else row.get("answer")
            if sample["extracted"] is not None and sample["extracted"] == wanted:
                right = [sample, *right]
        right = [*labels.worked(row, mode, label), *right]
        if not right:
            right = labels.rationales(row)
            if right:
                hinted_ids.add(row["id"])
        if not right:
            drops["label"] += 1
            continue
        sane = [s for s in right if filters.sane(s, params.max_tokens, params.max_chars)]
        drops["format"] += len(right) - len(sane)
        texts = [s["text"] for s in sane]
        idx, drops_exact = filters.exact_dedup(texts)
        drops["duplicate"] += drops_exact
        sane = _keep(sane, idx)
        idx, drops_near = near_dedup([s["text"] for s in sane], params.near_duplicate, params.num_perm)
        drops["near_duplicate"] += drops_near
        sane = _keep(sane, idx)
        if params.prefer_short:
            sane.sort(
                key=lambda s: (not s.get("refined"), not s.get("worked"), s.get("tokens") or len(s["text"]))
            )
        drops["per_prompt_cap"] += max(0, len(sane) - params.max_per_prompt)
        sane = sane[: params.max_per_prompt]
        if any(s.get("worked") for s in sane):
            worked_ids.add(row["id"])
        used_labels[row["id"]] = label if mode == labels.LABEL_FREE else None
        rejected[row["id"]] = sorted(wrong, key=lambda s: s.get("finish_reason") != "stop")
        candidates.extend((row, s) for s in sane)

    diversity = 0.0
    if embed is not None and candidates:
        vectors = embed([f"{r['prompt']}\n{s['text']}" for r, s in candidates])
        idx, drops["diversity"] = greedy_distinct(vectors, params.diversity_threshold)
        candidates = _keep(candidates, idx)
        diversity = mean_pairwise_distance(vectors[idx])

    row_ids = list(dict.fromkeys(r["id"] for r, _ in candidates))
    categories = {r["id"]: r["category"] for r, _ in candidates}
    cap = filters.category_cap([categories[i] for i in row_ids], params.category_cap, params.balance_ratio)
    idx, drops["balance"] = filters.cap_per_group([categories[i] for i in row_ids], cap)
    final_ids = set(_keep(row_ids, idx))
    step_ids = {r["id"] for r, _ in candidates if is_step(r)}
    paraphrase_ids = {r["id"] for r, _ in candidates if is_paraphrase(r)}
    candidates = [(r, s) for r, s in candidates if r["id"] in final_ids]
    if embed is not None and drops["balance"] and candidates:
        diversity = mean_pairwise_distance(embed([f"{r['prompt']}\n{s['text']}" for r, s in candidates]))

    sft, pairs = build_sets(candidates, rejected, params.pairs_per_prompt, params.worked_repeat)
    kept_labels = {k: v for k, v in used_labels.items() if k in final_ids}
    card = {
        "label_mode": mode,
        "counts": {
            "prompts_in": prompts_in,
            "samples_in": samples_in,
            "prompts_kept": len(final_ids),
            "sft": len(sft),
            "pairs": len(pairs),
            "prompts_rationalized": len(final_ids & hinted_ids),
            "prompts_worked": len(final_ids & worked_ids),
            "prompts_steps": len(final_ids & step_ids),
            "paraphrases_in": paraphrases_in,
            "paraphrases_kept": len(final_ids & paraphrase_ids),
            "worked_repeats": sum(1 for x in sft if x.get("repeat")),
            "prompts_self_judged": len(final_ids & judged_ids),
        },
        "dropped": drops,
        "drop_units": DROP_UNITS,
        "category_mix": dict(sorted(Counter(x["category"] for x in sft).items())),
        "diversity": diversity,
        "yield": len(final_ids) / prompts_in if prompts_in else 0.0,
        "category_cap": cap,
        "params": params.model_dump(),
    }
    card.update(report_precision(mode, kept_labels, sft, truth, extract))
    return Selection(sft, pairs, card)


def build_sets(
    candidates: Sequence[tuple[Row, dict]],
    rejected: Mapping[str, Sequence[dict]],
    pairs_per_prompt: int,
    worked_repeat: Mapping[str, int],
) -> tuple[list[dict], list[dict]]:
    """SFT rows from the kept responses (a worked reply of a category in ``worked_repeat`` that many
    times, the copies marked ``repeat``); pairs of a kept response with a wrong one of its prompt.

    >>> row = {"id": "a", "prompt": "23 - 61 =", "category": "sub2"}
    >>> sft, _ = build_sets([(row, {"text": "... so the answer is -38.", "worked": True})], {}, 2, {"sub2": 3})
    >>> [(x["id"], x.get("repeat", False)) for x in sft]
    [('a-0', False), ('a-0r1', True), ('a-0r2', True)]
    >>> len(build_sets([(row, {"text": "-38"})], {}, 2, {"sub2": 3})[0])
    1
    """
    sft, pairs = [], []
    count: Counter[str] = Counter()
    for row, sample in candidates:
        k = count[row["id"]]
        count[row["id"]] += 1
        base = {"prompt": row["prompt"], "id": f"{row['id']}-{k}", "category": row["category"]}
        sft.append({**base, "response": sample["text"]})
        times = worked_repeat.get(row["category"], 1) if sample.get("worked") else 1
        sft.extend(
            {**base, "id": f"{base['id']}r{r}", "response": sample["text"], "repeat": True}
            for r in range(1, times)
        )
        wrong = [s for s in rejected.get(row["id"], ()) if s.get("text", "").strip()]
        if k < pairs_per_prompt and wrong:
            pairs.append({**base, "chosen": sample["text"], "rejected": wrong[k % len(wrong)]["text"]})
    return sft, pairs


def report_precision(
    mode: str,
    kept_labels: Mapping[str, str | None],
    sft: Sequence[dict],
    truth: Mapping[str, str | None],
    extract: Callable[[str], str | None],
) -> dict[str, float | None]:
    """Figures against the truth, computed after selection (never an input to it)."""
    pseudo = labels.precision(kept_labels, truth) if mode == labels.LABEL_FREE else None
    answers = {x["id"]: extract(x["response"]) for x in sft}
    truths = {x["id"]: truth.get(x["id"].rsplit("-", 1)[0]) for x in sft}
    return {"pseudo_label_precision": pseudo, "sft_answer_precision": labels.precision(answers, truths)}
