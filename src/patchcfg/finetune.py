"""Moved (see :mod:`patchcfg._moved`)."""

from patchcfg._moved import forward

forward(__name__)
