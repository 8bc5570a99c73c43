"""dlcore.train: AMP, activation checkpointing, early stopping, the training loop."""
