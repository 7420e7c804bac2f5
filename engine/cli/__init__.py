"""`warden`, the command line: `main` parses, the modules beside it hold the commands."""

from engine.cli.main import main

__all__ = ["main"]
