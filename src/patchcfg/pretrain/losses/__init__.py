"""The pretraining losses: pure functions, one module each (``views`` holds what they share).

Each takes embeddings (or images) and returns a per-example loss (and, for some, what they count);
each cites its paper and shows a tiny example in its docstring. A method imports the function it
uses: the losses have no registry of names. Importing this package is cheap (no TensorFlow).

Adding a loss: write ``patchcfg/pretrain/losses/<name>.py`` with the function, its paper and its
example; ``tests/pretrain/test_losses.py`` runs the example of every module here.
"""

from __future__ import annotations

