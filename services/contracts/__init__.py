"""Data formats and parameter schemas that more than one part of the loop shares.

A stage service never imports another stage's package: what two of them must agree on (the samples
row written by acquisition and read by selection, label voting, the selection parameters and training
hyperparameters the evaluator validates when a run config loads) lives here, once.
"""
