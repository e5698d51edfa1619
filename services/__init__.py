"""selfimprove: a closed loop in which a language model improves itself.

The import package ``selfimprove`` lives in ``services/``: the shared core in ``core``, the
generated messages in ``v2``, shared data formats in ``contracts``, the model runtime in ``runtime``, one folder per stage service,
and the command line in ``cli``.
"""

__version__ = "0.1.0"
