"""The model runtime every service shares: model loading, inference engines, tasks, the external
benchmark and evaluation statistics.

Importing this package is cheap: torch and transformers are imported only by the modules that run
the model (``models``, ``hf_engine``, ``vllm_engine``, ``tiny``), so pure logic (tasks, extraction,
stats, benchmark parsing) works in processes without them.
"""
