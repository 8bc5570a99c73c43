"""dlcore.augment: MixUp and CutMix."""
