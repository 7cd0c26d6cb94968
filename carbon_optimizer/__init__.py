"""carbon-optimizer: rank (location, start time) placements of a workload by carbon and price.

Importing the package does no I/O and reads no environment: settings are built by the app factory
or the CLI, and the bundled data is loaded lazily by the providers that need it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
