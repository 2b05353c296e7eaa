"""The pyfunc model definition MLflow logs from code (``mlflow.pyfunc.log_model(python_model=<this file>)``)."""
from mlflow.models import set_model

from fennec_mlflow.serving.flavor import FennecRanker

set_model(FennecRanker())
