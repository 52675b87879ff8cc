"""The evaluate stage: the model and its baselines on the model's own test split."""
