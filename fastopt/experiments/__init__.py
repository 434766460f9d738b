"""The lecture's experiments, reproduced end to end on fastopt's kernels (``fastopt demo``)."""
