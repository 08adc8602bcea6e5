"""Model tooling: the labelled corpus, training, evaluation, MLflow registration and the parity gate."""
