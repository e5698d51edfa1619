"""The ``selfimprove`` command line."""
