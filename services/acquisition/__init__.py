"""The acquisition service: the current policy writes candidate training data, one shard at a time.

``python -m selfimprove.acquisition`` consumes ``acquire_command`` envelopes, samples K answers per
prompt, scores every sample (verifier, self-consistency, optional self-judge), publishes the shard as
``samples.jsonl`` with its manifest, and answers with ``acquire_result``.
"""
