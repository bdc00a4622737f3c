"""Evaluation of trained runs: the report (macro F1 first), per-class thresholds, BirdNET zero-shot."""
