"""Messages between server nodes, and to live viewers.

``LocalBus`` serves one node (nothing leaves the process); ``RedisBus`` connects
the nodes of a cluster through Redis: a stream per node for what must not be
lost (acknowledged once handled; a dead node's stream is taken over by a live
one), pub/sub for what may be (agents coming and going, live views), and the
map of which node holds which agent, which expires with its node. ``BusLive``
carries the wake-ups of live views (a job's event stream) on whichever bus the
node has, so a viewer on one node hears of results written on another.
"""

from jobfleet.bus.base import Bus, BusListener
from jobfleet.bus.live import BusLive, LiveBus
from jobfleet.bus.local import LocalBus

__all__ = ["Bus", "BusListener", "BusLive", "LiveBus", "LocalBus"]
