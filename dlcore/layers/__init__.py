"""dlcore.layers: Transformer and ResNet building blocks (import them from ``dlcore``)."""
