"""The evaluator: the autonomous controller of the loop, and its evaluation workers.

``python -m selfimprove.evaluator`` runs the controller (no model, no torch): the control plane
(gRPC ``selfimprove.v2.ControlPlaneService``) and the loop that commands every stage and judges its
result. ``python -m selfimprove.evaluator.worker`` runs an evaluation worker (the model).
"""
