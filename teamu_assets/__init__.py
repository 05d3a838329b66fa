"""Teamu's recommender data platform."""

import os

# TensorFlow Recommenders works only on legacy Keras (tf-keras); this must be set before TensorFlow is first
# imported anywhere in the process, so it is set when the package is.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
