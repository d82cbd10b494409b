"""Saved-model examples for ``serve-gateway worker --adapter``: each script writes a tiny model
file (generated, never committed) that ``config/adapter-*.yaml`` serves."""
