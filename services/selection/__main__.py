"""Entry point: ``python -m selfimprove.selection``."""

from selfimprove.core.runner import main


def run() -> None:
    from selfimprove.selection.service import setup

    main("selection", setup)


if __name__ == "__main__":
    run()
