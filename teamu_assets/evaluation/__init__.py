"""Offline evaluation of recommendation models: metrics, baselines, segments, CTR, the promotion gate and
the report. Pure numpy/pandas/matplotlib: nothing here imports Dagster or TensorFlow."""
