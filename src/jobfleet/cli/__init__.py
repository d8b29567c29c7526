"""The ``jobfleet`` command: a thin shell over ``jobfleet.sdk`` plus the daemons."""
