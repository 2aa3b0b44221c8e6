"""Layers shared by teachers and students: norms, IBN, non-local, pooling, classifiers."""
