"""TensorBoard records written in one op: histogram buckets by hand."""

import numpy as np

from ranking.summaries import _buckets


def test_buckets_are_equal_width_over_the_finite_values():
  got = _buckets([0.0, 1.0, 2.0, 3.0, np.nan, np.inf], 2)
  # [0, 1.5): 0, 1; [1.5, 3]: 2, 3 (the last bucket holds the maximum).
  np.testing.assert_array_equal(got, [[0.0, 1.5, 2], [1.5, 3.0, 2]])


def test_equal_values_fill_the_last_bucket_and_none_give_zeros():
  np.testing.assert_array_equal(_buckets([2.0, 2.0, 2.0], 3),
                                [[2, 2, 0], [2, 2, 0], [2, 2, 3]])
  np.testing.assert_array_equal(_buckets([np.nan], 2), np.zeros((2, 3)))
