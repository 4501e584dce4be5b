"""The vision trainable: image classifiers trained with SGD, one report per epoch (see train.py)."""
