"""Training: the loop every model family goes through (task, trainer, data module, losses), the run
folder, distillation, cross-validation and tuning, classical baselines.
"""
