"""The pretraining input pipeline is built once and addressed by epoch."""

import numpy as np
import pytest

from patchcfg.config import load_config
from patchcfg.label_table import read_label_table
from patchcfg.pretrain.simclr import SimCLR


@pytest.mark.parametrize("seed", [0, 7])
def test_each_epoch_has_its_own_reproducible_batches_without_retracing(tmp_path, digits_table, seed):
    import yaml

    labels = digits_table(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "seed": seed, "data": {"labels": str(labels), "imshape": [16, 16]},
                                    "backbone": {"name": "tiny"}, "pretrain": {"batch_size": 16}}))
    config = load_config(path)
    method = SimCLR(config, read_label_table(labels).resolved_paths())

    def first_batch(epoch):
        return next(iter(method.dataset(epoch)))[0].numpy()

    a, b, again = first_batch(0), first_batch(1), first_batch(0)
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, b)
    assert method._pipeline.experimental_get_tracing_count() == 1  # traced once, for every epoch
