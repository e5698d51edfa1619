"""Entry point: ``python -m selfimprove.acquisition``."""

from selfimprove.core.runner import main


def run() -> None:
    from selfimprove.acquisition.service import setup

    main("acquisition", setup)


if __name__ == "__main__":
    run()
