"""Example model workers for serve-gateway."""
