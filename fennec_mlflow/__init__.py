"""fennec-mlflow: pre-trained model recommendation for downstream fine-tuning, as an MLflow plugin."""
__version__ = "0.1.0"
