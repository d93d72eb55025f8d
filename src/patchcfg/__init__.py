"""patchcfg: label-efficient image classification, every experiment declared in one YAML file."""

__version__ = "0.1.0"
