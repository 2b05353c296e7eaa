"""Images and models (torch, PIL): task sources, the model zoo, features and their cache, checkpoints, task proxies."""
