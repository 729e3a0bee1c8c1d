"""orgplane: a self-hosted control plane for trees of organizations."""

__version__ = "0.1.0"
