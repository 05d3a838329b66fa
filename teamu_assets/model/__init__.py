"""The two-tower recommender in TensorFlow Recommenders: no Dagster, no database.

features: mart rows -> tower inputs (numpy); dataset: temporal split, Parquet artifact, streaming readers;
params: the training knobs and the score layout; itemitem: the towers' item-item block (EASE, factorized);
towers: query/candidate towers and the retrieval model; train: training loop, saved towers, batch embedding;
export: query tower + top-k index (BruteForce, ScaNN) as a serving SavedModel; baselines: the TFRS tutorial's
id-only two-tower; pipeline: the steps the assets call. features, dataset, params, itemitem and pipeline import
without loading TensorFlow (pipeline loads it inside the functions that embed).
"""
