"""Moving messages to live viewers (and, scaled out, between server nodes)."""

from jobfleet.bus.live import InProcessBus, LiveBus

__all__ = ["InProcessBus", "LiveBus"]
