"""`warden`, the command line: `main` parses, the modules beside it hold the commands.

The top layer and the composition root: it may import every engine package, and it is
the one engine package that may import ``api`` (to serve it in `warden serve` and
`warden demo`).
"""

from engine.cli.main import main

__all__ = ["main"]
