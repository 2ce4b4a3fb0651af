"""Private implementation of :mod:`streamkit.emulator` (see its docstring)."""
