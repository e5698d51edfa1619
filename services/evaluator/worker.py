"""``python -m selfimprove.evaluator.worker``: an evaluation worker (runs the model; see ``worker_service``)."""

if __name__ == "__main__":
    from selfimprove.core.runner import main
    from selfimprove.evaluator.worker_service import setup

    main("evaluator-worker", setup)
