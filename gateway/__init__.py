"""serve-gateway: an asyncio reverse-proxy gateway for model serving."""

__version__ = "0.1.0"
