"""Label groups in numpy: resolving a softmax group's rows."""

import numpy as np

from patchcfg.label_groups import resolve_softmax


def test_resolving_a_softmax_group():
    labels = np.array([[1, -1, -1],    # one present: the others are absent
                       [-1, 0, 0],     # all absent but one: that one is the answer
                       [-1, 0, -1],    # not resolved
                       [1, 1, -1],     # two present: contradictory, not resolved
                       [0, 0, 0],      # none present: contradictory, not resolved
                       [0, 1, 0]], np.float32)
    np.testing.assert_array_equal(resolve_softmax(labels), [[1, 0, 0], [1, 0, 0], [-1, -1, -1], [-1, -1, -1],
                                                             [-1, -1, -1], [0, 1, 0]])
