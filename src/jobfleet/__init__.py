"""jobfleet: remote job execution across host fleets."""

__version__ = "0.1.0"
