"""Any Hugging Face causal-LM folder as the base: end-of-turn tokens from its generation config, a
clear error for a tokenizer without a chat template, LoRA targets checked against its layers, and
the trainer's losses on architectures other than Llama (tiny Qwen2 and GPT-NeoX folders)."""

import json

import pytest

from selfimprove.core.stage import StageInputError
from selfimprove.runtime.models import ModelNotFoundError, prepare_tokenizer, stop_token_ids
from selfimprove.trainer.model import check_targets

pytestmark = pytest.mark.unit


class FakeTokenizer:
    """The few tokenizer attributes the stop-token and template checks read."""

    def __init__(self, eos=2, vocab=None, template="{{ messages }}"):
        self.eos_token_id, self.unk_token_id = eos, None
        self.eos_token = "<eos>"
        self.pad_token = None
        self.chat_template = template
        self.vocab = vocab or {}

    def convert_tokens_to_ids(self, token):
        return self.vocab.get(token, self.unk_token_id)


def model_folder(tmp_path, generation=None, config=None):
    (tmp_path / "config.json").write_text(json.dumps(config or {"model_type": "qwen2"}))
    if generation is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    return tmp_path


@pytest.mark.parametrize(
    ("generation", "config", "expected"),
    [
        ({"eos_token_id": [7, 9]}, None, [2, 7, 9]),  # a list: every id ends a turn
        ({"eos_token_id": 9}, None, [2, 9]),  # one id
        (None, {"eos_token_id": 5}, [2, 5]),  # no generation config: the model config's eos
        ({"eos_token_id": None}, {"eos_token_id": 5}, [2, 5]),
        (None, None, [2]),  # only the tokenizer's eos
    ],
)
def test_stop_tokens_come_from_the_folder_and_the_tokenizer(tmp_path, generation, config, expected):
    folder = model_folder(tmp_path, generation, config)
    assert stop_token_ids(folder, FakeTokenizer(eos=2)) == expected


def test_stop_tokens_of_a_loaded_model_and_chatml_end_of_turn():
    class Model:
        class generation_config:  # noqa: N801 - the attribute name transformers uses
            eos_token_id = [4, 2]

    tokenizer = FakeTokenizer(eos=0, vocab={"<|im_end|>": 6})
    assert stop_token_ids(Model(), tokenizer) == [0, 2, 4, 6]


def test_a_bad_eos_or_none_at_all_is_refused(tmp_path):
    folder = model_folder(tmp_path, {"eos_token_id": ["</s>"]})
    with pytest.raises(ModelNotFoundError, match="generation_config.json: eos_token_id"):
        stop_token_ids(folder, FakeTokenizer())
    (tmp_path / "empty").mkdir()
    empty = model_folder(tmp_path / "empty")
    with pytest.raises(ModelNotFoundError, match="no end-of-turn token"):
        stop_token_ids(empty, FakeTokenizer(eos=None))


def test_a_tokenizer_without_a_chat_template_is_refused_naming_its_folder():
    with pytest.raises(ModelNotFoundError, match="tokenizer of /models/plain has no chat template"):
        prepare_tokenizer(FakeTokenizer(template=None), "/models/plain")


def test_target_modules_are_checked_against_the_layers():
    layers = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}
    assert check_targets("all-linear", layers, "GPTNeoXForCausalLM") == "all-linear"
    assert check_targets(".*dense.*", layers, "GPTNeoXForCausalLM") == ".*dense.*"
    assert check_targets(["query_key_value"], layers, "GPTNeoXForCausalLM") == ["query_key_value"]
    with pytest.raises(StageInputError, match=r"\['q_proj', 'v_proj'\] are not linear layers of GPTNeoX"):
        check_targets(["q_proj", "v_proj", "dense"], layers, "GPTNeoXForCausalLM")
    with pytest.raises(StageInputError, match="empty list"):
        check_targets([], layers, "GPTNeoXForCausalLM")
    with pytest.raises(StageInputError, match="no linear layer"):
        check_targets("all-linear", set(), "Odd")


@pytest.fixture(scope="module", params=["qwen2", "gpt_neox"])
def tiny_folder(request, tmp_path_factory):
    from selfimprove.runtime.tiny import tiny_model_folder

    return tiny_model_folder(tmp_path_factory.mktemp(request.param) / "base", request.param, hidden=32)


def test_tiny_folder_declares_two_end_of_turn_tokens(tiny_folder):
    from selfimprove.runtime.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_folder)
    turn_end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert json.loads((tiny_folder / "generation_config.json").read_text())["eos_token_id"] == [
        tokenizer.eos_token_id,
        turn_end,
    ]
    assert set(stop_token_ids(tiny_folder, tokenizer)) == {tokenizer.eos_token_id, turn_end}


def test_lora_and_the_losses_on_another_architecture(tiny_folder):
    """all-linear LoRA wraps the decoder's layers but never the output head, encoding learns the
    template's own end-of-turn token, and a shared prefix gives the same loss as full rows."""
    import torch

    from selfimprove.contracts.params import Hparams
    from selfimprove.runtime.models import load_model
    from selfimprove.trainer.batches import collate, encode
    from selfimprove.trainer.losses import response_loss
    from selfimprove.trainer.model import linear_names, trainable_model

    plain, _ = load_model(str(tiny_folder))
    model, tok = trainable_model(tiny_folder, None, Hparams(lora_r=4), seed=0)
    causal = model.get_base_model()
    wrapped = {n.rsplit(".", 1)[-1] for n, m in causal.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == linear_names(plain) and wrapped
    assert not hasattr(causal.get_output_embeddings(), "lora_A")

    ends = stop_token_ids(model, tok)
    rows = [("What is 76 - 48?", "The answer is 28."), ("What is 3 + 4?", "7"), ("Add 12 and 9.", "21")]
    encoded = [encode(tok, p, r, 128, ends) for p, r in rows]
    assert tok.decode(encoded[1].ids[encoded[1].prompt_len :]) == "7<|endoftext|>"
    ids, mask, labels = collate(encoded, tok.pad_token_id)
    once, n_once = response_loss(model, ids, mask, labels, share_prefix=True)
    full, n_full = response_loss(model, ids, mask, labels, share_prefix=False)
    assert n_once == n_full and torch.isclose(once, full, rtol=1e-5)
