"""Entry point: ``python -m selfimprove.refinement``."""

from selfimprove.core.runner import main


def run() -> None:
    from selfimprove.refinement.service import setup

    main("refinement", setup)


if __name__ == "__main__":
    run()
