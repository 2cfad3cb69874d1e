"""WA = accuracy over all test utterances; UA = mean recall over the classes present in the test set."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix


def wa_ua(targets: np.ndarray, predictions: np.ndarray) -> tuple[float, float]:
    """(WA, UA) as fractions. UA is sklearn's balanced accuracy: classes absent from ``targets`` don't count."""
    if len(targets) == 0:
        return float("nan"), float("nan")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a predicted class is absent from targets
        ua = balanced_accuracy_score(targets, predictions)
    return float(accuracy_score(targets, predictions)), float(ua)


def confusion(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> list[list[int]]:
    return confusion_matrix(targets, predictions, labels=list(range(num_classes))).tolist()
