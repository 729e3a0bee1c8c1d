"""The ASGI entry point for servers: ``orgplane.asgi:app`` (settings from the environment)."""

from orgplane.app import create_app

app = create_app()
