"""Pure algorithms (numpy, scipy, scikit-learn only): the recommender, evaluation metrics and protocol, estimators."""
