"""Independent numpy references for the metrics the tests check."""

import numpy as np


def auc(labels, scores) -> float:
  """ROC AUC by ranks (Mann-Whitney U), tied scores sharing their mean rank."""
  labels = np.asarray(labels)
  scores = np.asarray(scores, np.float64)
  _, inverse, counts = np.unique(scores, return_inverse=True,
                                 return_counts=True)
  first = np.cumsum(counts) - counts          # ranks before each tie group
  ranks = (first + (counts + 1) / 2.0)[inverse.reshape(-1)]
  positive = labels == 1
  n_pos, n_neg = positive.sum(), (~positive).sum()
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) /
               (n_pos * n_neg))
