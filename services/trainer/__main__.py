"""Run the trainer service: ``python -m selfimprove.trainer`` (settings from ``SELFIMPROVE_*``)."""

from selfimprove.core.runner import main
from selfimprove.trainer.service import setup

if __name__ == "__main__":
    main("trainer", setup)
