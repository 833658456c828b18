"""``classify`` (coremltools defs iOS15/classify.py): the classifier head of a model."""

from __future__ import annotations

import numpy as np

from ..registry import register


@register("classify")
def classify(probabilities, classes):
    """MIL ``classify`` (iOS15+): returns the most probable class label and the class -> probability
    dictionary built from ``probabilities`` (flattened) and the ``classes`` list."""
    probs = np.asarray(probabilities, np.float32).reshape(-1)
    labels = classes if isinstance(classes, list) else list(np.asarray(classes).reshape(-1))
    labels = [label.item() if isinstance(label, np.ndarray) else label for label in labels]
    if len(labels) != probs.size:
        raise ValueError(f"{len(labels)} classes for {probs.size} probabilities")
    best = labels[int(np.argmax(probs))]
    label = best if isinstance(best, str) else np.asarray(best, np.int64)
    return label, {lab: float(p) for lab, p in zip(labels, probs)}
