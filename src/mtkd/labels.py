"""The label of a sample without one: a leaf module, so the loss functions can skip unlabeled
samples without loading the data package."""

UNLABELED = -1  # label of a sample in the unlabeled pool (a transfer set's unlabeled part)
