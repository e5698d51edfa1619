"""Trainer logic without the bus: chat encoding with response-only labels, the batch
schedule, and a resumed run that ends exactly where an uninterrupted one does."""

import random
import shutil

import pytest

from selfimprove.contracts.params import Hparams
from selfimprove.trainer import data
from selfimprove.trainer.batches import IGNORE, Encoded, collate, encode
from selfimprove.trainer.hparams import parse_hparams

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny():
    from selfimprove.runtime.tiny import tiny_llama

    return tiny_llama(layers=1, hidden=32)


def test_a_shared_prefix_run_once_gives_the_same_loss_and_gradient():
    import torch
    from peft import LoraConfig, get_peft_model

    from selfimprove.runtime.tiny import tiny_llama
    from selfimprove.trainer.losses import decoder_states, response_loss, shared_prefix_len

    model, tok = tiny_llama(layers=2, hidden=32)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
    rows = [("What is 76 - 48?", "The answer is 28."), ("What is 3 + 4?", "7"), ("Add 12 and 9.", "21 it is")]
    ids, mask, labels = collate([encode(tok, p, r, 128) for p, r in rows], tok.pad_token_id)
    shared = shared_prefix_len(ids, mask, labels)
    assert shared >= 20  # the chat template's system prompt and the user turn's header

    def loss_and_grads(share_prefix):
        model.zero_grad()
        hidden, _ = decoder_states(model, ids, mask, labels, share_prefix)
        assert hidden.shape[1] == ids.shape[1] - (shared if share_prefix else 0)
        loss, _ = response_loss(model, ids, mask, labels, share_prefix)
        loss.backward()
        return loss.item(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}

    once, grads_once = loss_and_grads(True)
    full, grads_full = loss_and_grads(False)
    assert once == pytest.approx(full, rel=1e-5)
    for name, g in grads_full.items():
        assert torch.allclose(grads_once[name], g, atol=1e-6, rtol=1e-4), name
    assert any(g.abs().sum() > 0 for g in grads_full.values())


def test_encode_learns_the_response_and_its_end_of_turn(tiny):
    _, tok = tiny
    e = encode(tok, "What is 2 + 3?", "2 + 3 = 5", max_length=512)
    assert tok.decode(e.ids[e.prompt_len :]) == "2 + 3 = 5<|im_end|>"
    ids, mask, labels = collate([e, Encoded(e.ids[:-3], e.prompt_len)], tok.pad_token_id)
    assert labels[0, -1] == tok.eos_token_id  # the end-of-turn token is learned although it is the pad id
    assert (labels[0, : e.prompt_len] == IGNORE).all() and (labels[1, -3:] == IGNORE).all()
    assert mask[1].sum() == len(e.ids) - 3


def test_schedule_is_reproducible_and_covers_every_example():
    from selfimprove.trainer.sft import schedule

    ex = [Encoded([0] * n, 1) for n in range(2, 52)]
    hp = Hparams(epochs=2, batch_size=4, grad_accum=3, bucket_size=16)
    plan = schedule(ex, hp, seed=1)
    assert plan == schedule(ex, hp, seed=1) != schedule(ex, hp, seed=2)
    seen = sorted(i for step in plan for batch in step for i in batch)
    assert seen == sorted(list(range(50)) * 2)

    def padding(batches):
        return sum(len(b) * max(len(ex[i].ids) for i in b) - sum(len(ex[i].ids) for i in b) for b in batches)

    grouped = [batch for step in plan for batch in step][:13]  # the first epoch
    order = list(range(50))
    random.Random(1).shuffle(order)
    plain = [order[i : i + 4] for i in range(0, 50, 4)]
    assert padding(grouped) < padding(plain) / 2


def test_bad_hparams_are_refused():
    from selfimprove.core.stage import StageInputError

    with pytest.raises(StageInputError, match="hparams_json: lr: Input should be greater than 0"):
        parse_hparams('{"lr": 0}')
    with pytest.raises(StageInputError, match="Invalid JSON"):
        parse_hparams("{")
    with pytest.raises(StageInputError, match="share_prefix: Input should be a valid boolean"):
        parse_hparams('{"share_prefix": "no"}')
    assert parse_hparams('{"share_prefix": false}').share_prefix is False
    with pytest.raises(
        StageInputError, match="frozen_dtype: Input should be 'float32', 'bfloat16' or 'auto'"
    ):
        parse_hparams('{"frozen_dtype": "bf16"}')


def test_bad_rows_are_refused():
    from selfimprove.core.stage import StageInputError

    with pytest.raises(StageInputError, match="line 2: needs string fields prompt, response"):
        data.parse_rows(b'{"prompt": "p", "response": "r"}\n{"prompt": "p"}\n', data.SFT_FIELDS, "x")


class FolderSync:
    """A checkpoint store in a local folder (the real one is the artifact store)."""

    def __init__(self, root):
        self.root = root

    def push(self, step, folder):
        shutil.copytree(folder, self.root / f"step-{step:06d}")

    def pull(self, dest):
        found = sorted(self.root.glob("step-*"))
        return (int(found[-1].name[5:]), found[-1]) if found else None


def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from selfimprove.runtime.tiny import tiny_llama
    from selfimprove.trainer.sft import train_sft

    torch.set_num_threads(1)
    _, tok = tiny_llama(layers=1, hidden=32)
    rows = [(f"What is {a} + 1?", f"{a} + 1 = {a + 1}") for a in range(40)]
    examples = [encode(tok, p, r, 128) for p, r in rows]
    hp = Hparams(epochs=2, batch_size=4, grad_accum=2, lr=1e-3)

    def fresh():
        model, _ = tiny_llama(layers=1, hidden=32)
        torch.manual_seed(0)
        return get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.1))

    class Killed(Exception):
        pass

    def kill_at(step):
        def on_step(point):
            if point["step"] == step:
                raise Killed

        return on_step

    def run(sync, work, on_step=lambda point: None):
        model = fresh()
        kw = dict(seed=3, lr=hp.lr, pad_id=tok.pad_token_id, work=work, sync=sync, checkpoint_every=3)
        return model, train_sft(model, examples, hp, on_step=on_step, **kw)

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole, whole_out = run(FolderSync(tmp_path / "a"), tmp_path / "wa")
    sync = FolderSync(tmp_path / "b")
    with pytest.raises(Killed):
        run(sync, tmp_path / "wb1", on_step=kill_at(8))  # dies in step 8: its last checkpoint is step 6
    resumed, out = run(sync, tmp_path / "wb2")
    assert out.resumed_from == 6 and out.steps == whole_out.steps == 10 and out.steps_run == 4
    assert [p["step"] for p in out.curve] == list(range(1, 11))
    for (name, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_frozen_base_in_bfloat16_trains_the_lora_in_float32_and_undoes_cleanly():
    import torch
    from peft import LoraConfig, get_peft_model

    from selfimprove.runtime.tiny import tiny_llama
    from selfimprove.trainer.precision import frozen_in_bf16, frozen_linears

    model, _ = tiny_llama(layers=1, hidden=32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(model, config)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        exact = model(ids).logits
    frozen = frozen_linears(model)
    assert len(frozen) == 7  # q, k, v, o, gate, up, down of the one layer; not the output layer
    assert all(not p.requires_grad for layer in frozen for p in layer.parameters())
    with frozen_in_bf16(model) as cast:
        assert cast == frozen
        logits = model(ids).logits
        assert logits.dtype == torch.float32 and not torch.equal(logits, exact)
        assert torch.allclose(logits, exact, atol=0.05)  # bfloat16 rounding, not another function
        logits.sum().backward()
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None and p.grad.dtype == torch.float32 for p in lora)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, exact)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_full_fine_tuning_has_no_frozen_layer_to_cast():
    from selfimprove.runtime.tiny import tiny_llama
    from selfimprove.trainer.precision import frozen_linears, wants_bf16

    model, _ = tiny_llama(layers=1, hidden=32)
    model.requires_grad_(True)
    assert frozen_linears(model, head=True) == []
    assert wants_bf16("auto", lambda: True) and not wants_bf16("float32", lambda: True)
