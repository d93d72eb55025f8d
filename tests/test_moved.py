"""The old import paths of the tasks and the label table: a user's ``import patchcfg.finetune`` keeps
working for one release, with a DeprecationWarning that names the new path."""

import importlib
import sys

import pytest

from patchcfg._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_import_path_warns_and_gives_the_new_module(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=MOVED[old].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    sys.modules.pop(old, None)
