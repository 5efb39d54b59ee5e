"""Control flow: If."""
