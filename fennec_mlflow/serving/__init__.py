"""The served recommender: the pyfunc flavour (save / log / load), build and rank, the offline demo."""
from fennec_mlflow.serving.flavor import load_model, log_model, save_model

__all__ = ["load_model", "log_model", "save_model"]
