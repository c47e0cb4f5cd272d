"""The tests' AUC reference, on hand-computed examples."""

import numpy as np

from tests.reference_metrics import auc


def test_auc_on_hand_examples():
  # Positives at ranks 2 and 4 of 4: (2 + 4 - 3) / (2 * 2) = 0.75.
  assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
  # All tied: every pair counts one half.
  assert auc(np.array([0, 1, 0, 1]), np.array([1.0, 1.0, 1.0, 1.0])) == 0.5
  # Positives 0.5 and 0.05 against negatives 0.1 and 0.5: pairs score
  # 0.5 > 0.1: 1, 0.5 = 0.5: 1/2, 0.05 < 0.1: 0, 0.05 < 0.5: 0 -> 1.5 / 4.
  assert auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.5, 0.5, 0.05])) == 0.375
