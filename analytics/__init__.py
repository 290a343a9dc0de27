"""Pure computations on stream stats: no I/O, no imports from the rest of the project."""
