"""The selection service: keep the acquired samples that teach, as an SFT set and preference pairs.

``python -m selfimprove.selection`` consumes ``select_command`` envelopes (acquire shard manifests, a
label mode, parameters), runs the filters of :mod:`.pipeline` and publishes ``sft.jsonl``,
``pairs.jsonl`` and ``card.json`` as one artifact, answered with ``select_result``.
"""
