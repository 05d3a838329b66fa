"""The two-tower recommender in TensorFlow Recommenders: no Dagster, no database.

features: mart rows -> tower inputs (numpy); dataset: temporal split, Parquet artifact, streaming readers;
towers: query/candidate towers and the retrieval model; train: training loop, saved towers, batch embedding;
export: query tower + top-k index (BruteForce, ScaNN) as a serving SavedModel. Only dataset and features are
importable without loading TensorFlow.
"""
