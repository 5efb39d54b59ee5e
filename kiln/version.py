"""kiln's version, and the build facts a library records about the compiler that made it."""

from __future__ import annotations

__version__ = "0.1.0"
