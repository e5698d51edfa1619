"""Seeded generators of malformed user inputs for the fuzz suite (``benchmarks/fuzz.py``): data files
for the data task (:mod:`.datafiles`), requests to the OpenAI-compatible HTTP endpoint
(:mod:`.httpreqs`) and corrupt model folders (:mod:`.modelfolders`). Each module is pure: the same
seed gives the same cases, and a case says what a clear refusal of it must name. The drivers that
send them through the real entry points are in ``benchmarks/inputfuzz.py``."""
