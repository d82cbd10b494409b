"""Example models: run with `serve-gateway worker examples.models.<module>:<Class>`."""
