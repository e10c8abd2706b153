"""corsproxy: a standalone reverse proxy that adds correct CORS to any HTTP API."""

__version__ = "0.1.0"
