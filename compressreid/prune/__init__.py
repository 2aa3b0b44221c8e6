"""Structured channel pruning: a thin adapter over Torch-Pruning, importance criteria, a replayable history.

``compressreid.prune.run.run_prune`` is the stage; ``history.apply_pruning_history`` rebuilds a pruned model.
"""
