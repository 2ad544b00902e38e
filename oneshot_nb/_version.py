"""The package's version, in a module of its own: the Dask worker plugin compares it
without importing the rest of the package."""

__version__ = "0.1.0"
