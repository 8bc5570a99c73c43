"""dlcore.optim: AdamW with warm-up and learning-rate schedules (import them from ``dlcore``)."""
