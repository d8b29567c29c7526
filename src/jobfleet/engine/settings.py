"""Knobs of the engine, set once at start."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineSettings:
    # set by the server from its data directory (``node_id``)
    node_id: str = ""
    # how long a host whose agent dropped keeps its task before it ends with 310
    agent_lost_grace: float = 10.0
    # after a restart, how long to wait for agents to come back before giving up on them
    recovery_window: float = 30.0
    # the server's own deadline runs this much past a step's timeout (the agent kills first)
    timeout_slack: float = 15.0
    lease_ttl: float = 30.0
    lease_renew: float = 5.0
    # a job driver that shows no progress this long (s; at least 3 reconcile_intervals,
    # counted past what a file step's sources may take) is stopped and its lease given
    # up, so that the job is taken over (engine/progress.py)
    driver_stall: float = 120.0
    # how often a waiting step checks the store, in case a wake-up was missed
    reconcile_interval: float = 5.0
    terminate_wait: float = 10.0
    # what an agent is asked to keep of a task's output (it truncates there itself)
    max_output: int = 10 * 1024 * 1024
    # what the server stores of one host task's output, whatever the agent sends
    max_output_bytes: int = 16 * 1024 * 1024
    # refused agent messages: at most one audit entry per agent and reason this often (s)
    refusal_audit_window: float = 60.0
    max_timeout: int = 259_200
    callback_attempts: int = 10
    callback_backoff: float = 2.0
    callback_backoff_max: float = 300.0
    callback_timeout: float = 10.0
    # deliveries one node has in flight at once to one receiver (scheme, host and port;
    # the mail server for mails): one that never answers holds no more slots than this
    callback_per_receiver: int = 4
    # how often the cron scheduler looks for due slots (s)
    cron_tick: float = 1.0
    # a slot missed while no server ran fires once on start if it is at most this old (s)
    cron_grace: float = 300.0
    # how fast cron time runs against the wall clock: 60 makes a cron minute last one
    # second (tests use it to see schedules fire within seconds)
    cron_time_scale: float = 1.0
    # agents coming and going are written to the inventory together, this long after
    # the first of them (s): thousands reconnecting after a restart take few transactions
    presence_batch: float = 0.2
