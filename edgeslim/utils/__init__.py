"""Small shared helpers (file I/O, console output)."""
