"""``python -m selfimprove.evaluator``: the controller of the loop (see ``service.py``)."""

from selfimprove.core.runner import main
from selfimprove.evaluator.service import setup

if __name__ == "__main__":
    main("evaluator", setup)
