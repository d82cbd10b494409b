"""The hot path. Never imports gateway.control, gateway.runtimes or docker."""
