"""Configs of other tools carried over to patchcfg: :mod:`patchcfg.interop.musket`."""
