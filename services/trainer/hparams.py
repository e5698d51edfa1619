"""The train command's ``hparams_json`` read with the shared schema (:class:`~selfimprove.contracts.params.Hparams`).

>>> h = parse_hparams('{"lr": 1e-4, "epochs": 2}')
>>> h.lr, h.epochs, h.lora_r
(0.0001, 2, 16)
>>> parse_hparams('{"learning_rate": 1e-4}').lr  # the Hugging Face name works too
0.0001
>>> parse_hparams('{"lrr": 1}')
Traceback (most recent call last):
...
selfimprove.core.stage.StageInputError: hparams_json: lrr: Extra inputs are not permitted
"""

from __future__ import annotations

from pydantic import ValidationError

from selfimprove.contracts.params import Hparams
from selfimprove.core.stage import StageInputError


def parse_hparams(text: str) -> Hparams:
    """Hyper-parameters from a JSON object (empty text: the defaults); a bad or unknown key is refused
    with a :class:`StageInputError` naming it."""
    try:
        return Hparams.model_validate_json(text.strip() or "{}")
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'hparams'}: {e['msg']}" for e in exc.errors()]
        raise StageInputError("hparams_json: " + "; ".join(problems)) from None
