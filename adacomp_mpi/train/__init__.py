"""Training with torch: build a run, the step, the loop, evaluation,
checkpoints, and the ledger the summary is built from.
"""
