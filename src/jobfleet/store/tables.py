"""Every table jobfleet keeps.

Times are epoch milliseconds, except columns named ``*_at`` and ``lease_until`` (epoch seconds).
Over 500 lines on purpose: this is the one metadata Alembic generates migrations from
(migrations/env.py), and the whole schema in one place is what a reader checks them against.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only makes INTEGER PRIMARY KEY columns auto-increment
Id = BigInteger().with_variant(Integer(), "sqlite")

businesses = Table(
    "businesses",
    metadata,
    Column("bk_biz_id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(255), nullable=False),
    Column("timezone", String(64), nullable=False, default="UTC"),
    # how many jobs of this business may run at once (null: no limit)
    Column("max_running_jobs", Integer, nullable=True),
    Column("create_time", BigInteger, nullable=False),
)

biz_sets = Table(
    "biz_sets",
    metadata,
    Column("bk_biz_set_id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(255), nullable=False),
    Column("biz_ids", JSON, nullable=False),
    Column("create_time", BigInteger, nullable=False),
)

apps = Table(
    "apps",
    metadata,
    Column("app_code", String(128), primary_key=True),
    Column("secret_hash", String(128), nullable=False),
    Column("description", String(1024), nullable=False, default=""),
    Column("disabled", Boolean, nullable=False, default=False),
    # how many jobs started by this app may run at once (null: no limit)
    Column("max_running_jobs", Integer, nullable=True),
    Column("create_time", BigInteger, nullable=False),
    # the users it may name and the businesses it may touch (null: any)
    Column("allowed_users", JSON, nullable=True),
    Column("allowed_biz", JSON, nullable=True),
    # only administration apps reach the administration routes
    Column("is_admin", Boolean, nullable=False, default=False, server_default=false()),
)

users = Table(
    "users",
    metadata,
    Column("username", String(128), primary_key=True),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("create_time", BigInteger, nullable=False),
)

grants = Table(
    "grants",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("username", String(128), nullable=False),
    Column("scope_type", String(32), nullable=False),
    Column("scope_id", String(64), nullable=False),
    UniqueConstraint("username", "scope_type", "scope_id"),
)

enroll_tokens = Table(
    "enroll_tokens",
    metadata,
    Column("token_hash", String(128), primary_key=True),
    Column("bk_biz_id", BigInteger, nullable=True),
    Column("uses_left", Integer, nullable=True),
    Column("expires_at", Float, nullable=True),
    Column("note", String(255), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
)

agents = Table(
    "agents",
    metadata,
    Column("agent_id", String(64), primary_key=True),
    Column("secret_hash", String(128), nullable=False),
    Column("bk_host_id", BigInteger, nullable=False, index=True),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("create_time", BigInteger, nullable=False),
    # every node polls this to close the connections of credentials revoked elsewhere
    Column("revoked_at", BigInteger, nullable=True, index=True),
    # one live credential per host, whatever races the enrollments run
    Index(
        "uq_agents_live_host",
        "bk_host_id",
        unique=True,
        sqlite_where=text("revoked = 0"),
        postgresql_where=text("revoked = false"),
    ),
)

hosts = Table(
    "hosts",
    metadata,
    Column("bk_host_id", Id, primary_key=True, autoincrement=True),
    Column("bk_biz_id", BigInteger, nullable=False, index=True),
    Column("bk_cloud_id", BigInteger, nullable=False, default=0),
    Column("ip", String(64), nullable=False),
    Column("ipv6", String(64), nullable=False, default=""),
    Column("agent_id", String(64), nullable=True, index=True),
    Column("hostname", String(255), nullable=False, default=""),
    Column("os_type", String(32), nullable=False, default=""),
    Column("os_name", String(255), nullable=False, default=""),
    Column("agent_version", String(64), nullable=False, default=""),
    Column("labels", JSON, nullable=False, default=dict),
    Column("alive", Integer, nullable=False, default=0),
    Column("node_id", String(64), nullable=True),
    Column("last_seen", BigInteger, nullable=True),
    Column("create_time", BigInteger, nullable=False),
    UniqueConstraint("bk_cloud_id", "ip"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bk_biz_id", BigInteger, nullable=False, index=True),
    Column("account", String(255), nullable=False),
    Column("alias", String(255), nullable=False),
    Column("category", Integer, nullable=False, default=1),
    Column("type", Integer, nullable=False, default=1),
    Column("os", String(32), nullable=False, default="Linux"),
    Column("password", Text, nullable=True),
    Column("description", String(1024), nullable=False, default=""),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
    # database accounts (category 2): where the database is, seen from the target host,
    # and the system account its client runs as
    Column("db_host", String(255), nullable=True),
    Column("db_port", Integer, nullable=True),
    Column("db_name", String(255), nullable=True),
    Column("db_system_account_id", BigInteger, nullable=True),
    UniqueConstraint("bk_biz_id", "alias"),
    # ids are never given out twice (migration 0021_stable_ids)
    sqlite_autoincrement=True,
)

# third-party file source credentials; ``secret`` is the encrypted JSON of its values
credentials = Table(
    "credentials",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("bk_biz_id", BigInteger, nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("type", String(32), nullable=False),
    Column("description", String(1024), nullable=False, default=""),
    Column("secret", Text, nullable=False),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
)

file_sources = Table(
    "file_sources",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bk_biz_id", BigInteger, nullable=False),
    Column("code", String(128), nullable=False),
    Column("alias", String(255), nullable=False),
    Column("type", String(64), nullable=False),
    Column("access_params", JSON, nullable=False),
    Column("credential_id", String(32), nullable=False),
    Column("file_prefix", String(255), nullable=False, default=""),
    Column("enable", Boolean, nullable=False, default=True),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
    UniqueConstraint("bk_biz_id", "code"),
)

job_instances = Table(
    "job_instances",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bk_biz_id", BigInteger, nullable=False),
    Column("scope_type", String(32), nullable=False),
    Column("scope_id", String(64), nullable=False),
    Column("name", String(512), nullable=False),
    Column("type", Integer, nullable=False),
    Column("launch_mode", Integer, nullable=False),
    Column("operator", String(128), nullable=False),
    Column("app_code", String(128), nullable=False),
    Column("status", Integer, nullable=False, index=True),
    Column("plan_id", BigInteger, nullable=False, default=-1),
    Column("template_id", BigInteger, nullable=False, default=-1),
    Column("cron_id", BigInteger, nullable=True),
    # encrypted (a URL of 1024 characters takes about 1,500 so)
    Column("callback_url", Text, nullable=True),
    Column("create_time", BigInteger, nullable=False),
    Column("start_time", BigInteger, nullable=True),
    Column("end_time", BigInteger, nullable=True),
    Column("total_time", BigInteger, nullable=True),
    # the node that drives this job, and until when (epoch s) its claim holds
    Column("owner_node", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    # bumped by every claim: a driver's writes are fenced on (owner_node, lease_gen), so
    # that a driver of an earlier claim by the same node cannot write
    Column("lease_gen", BigInteger, nullable=False, server_default="0"),
    # a plan's global variables as the job started with them (password values encrypted)
    Column("variables", JSON, nullable=True),
    Index(None, "scope_type", "scope_id", "create_time"),
    # a business's jobs of one status (the console's running, failed and waiting ones),
    # of one operator, of one cron
    Index(None, "scope_type", "scope_id", "status", "create_time"),
    Index(None, "scope_type", "scope_id", "operator", "create_time"),
    Index(None, "scope_type", "scope_id", "cron_id", "create_time"),
    # retention deletes by age
    Index(None, "create_time"),
)

step_instances = Table(
    "step_instances",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("job_instance_id", BigInteger, nullable=False, index=True),
    Column("step_order", Integer, nullable=False),
    Column("name", String(512), nullable=False),
    Column("type", Integer, nullable=False),
    Column("status", Integer, nullable=False),
    Column("execute_count", Integer, nullable=False, default=0),
    Column("ignore_error", Boolean, nullable=False, default=False),
    Column("timeout", Integer, nullable=False, default=7200),
    Column("account_id", BigInteger, nullable=True),
    Column("account_alias", String(255), nullable=True),
    Column("account_name", String(255), nullable=True),
    Column("script_language", Integer, nullable=True),
    Column("script_content", Text, nullable=True),
    Column("script_param", Text, nullable=True),
    Column("is_param_sensitive", Boolean, nullable=False, default=False),
    Column("target", JSON, nullable=True),
    Column("rolling_config", JSON, nullable=True),
    Column("batch_count", Integer, nullable=False, default=0),
    Column("current_batch", Integer, nullable=False, default=0),
    # settings of step kinds beyond scripts (files, confirmation, variables)
    Column("config", JSON, nullable=True),
    # the job's global variables once this step ended (what it set, password values encrypted)
    Column("variables", JSON, nullable=True),
    Column("operator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("start_time", BigInteger, nullable=True),
    Column("end_time", BigInteger, nullable=True),
    Column("total_time", BigInteger, nullable=True),
)

step_hosts = Table(
    "step_hosts",
    metadata,
    Column("step_instance_id", BigInteger, primary_key=True, autoincrement=False),
    Column("execute_count", Integer, primary_key=True, autoincrement=False),
    Column("bk_host_id", BigInteger, primary_key=True, autoincrement=False),
    Column("batch", Integer, nullable=False, default=0),
    Column("bk_cloud_id", BigInteger, nullable=False),
    Column("ip", String(64), nullable=False),
    Column("ipv6", String(64), nullable=False, default=""),
    Column("agent_id", String(64), nullable=True),
    Column("status", Integer, nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("error_code", Integer, nullable=False, default=0),
    Column("tag", String(255), nullable=False, default=""),
    Column("start_time", BigInteger, nullable=True),
    Column("end_time", BigInteger, nullable=True),
    Column("total_time", BigInteger, nullable=True),
    # variables a script step set on this host ({name: value})
    Column("variables", JSON, nullable=True),
    # the job list filtered by ip finds the few host results of that address (migration
    # 0024): PostgreSQL otherwise scans every host result of every job for them
    Index(None, "ip"),
)

log_chunks = Table(
    "log_chunks",
    metadata,
    Column("step_instance_id", BigInteger, primary_key=True, autoincrement=False),
    Column("execute_count", Integer, primary_key=True, autoincrement=False),
    Column("bk_host_id", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("content", Text, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("job_instance_id", BigInteger, nullable=True, index=True),
    # a callback's URL encrypted, a webhook's masked (its payload holds it encrypted), a
    # mail's addresses
    Column("target", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False, index=True),
    Column("state", String(16), nullable=False, default="pending"),
    Column("last_error", String(1024), nullable=False, default=""),
    Column("lease_owner", String(64), nullable=True),
    Column("create_time", BigInteger, nullable=False),
    Column("done_time", BigInteger, nullable=True),
    # the due pending rows, apart from the delivered ones that are most of the table
    Index(None, "state", "next_attempt_at"),
)

blobs = Table(
    "blobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(1024), nullable=False),
    # upload (an operator's file), agent (copied from a source host), config (push_config_file)
    Column("kind", String(16), nullable=False),
    Column("bk_biz_id", BigInteger, nullable=True),
    Column("owner", String(128), nullable=False, default=""),
    # the only host whose agent may write this blob
    Column("writer_host_id", BigInteger, nullable=True),
    # hash of the one-time token in an upload URL (generate_local_file_upload_url)
    Column("token_hash", String(128), nullable=True),
    Column("state", String(16), nullable=False),
    # the writer that holds the blob while it is written (see store.blobs)
    Column("write_token", String(32), nullable=True),
    Column("size", BigInteger, nullable=True),
    Column("sha256", String(64), nullable=True),
    Column("create_time", BigInteger, nullable=False, index=True),
    Column("done_time", BigInteger, nullable=True),
    # the writer whose bytes ``blob_parts`` holds (nodes of a cluster share no disk)
    Column("parts_token", String(32), nullable=True),
)

# a blob's bytes, a part at a time, written by the node that received them and read
# by every other node that serves the blob
blob_parts = Table(
    "blob_parts",
    metadata,
    Column("blob_id", String(64), primary_key=True),
    Column("token", String(32), primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# one row per file and host of a file step: mode 0 on the source host (upload),
# mode 1 on the target host (download); what get_job_instance_ip_log shows
file_logs = Table(
    "file_logs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("step_instance_id", BigInteger, nullable=False),
    Column("execute_count", Integer, nullable=False),
    Column("bk_host_id", BigInteger, nullable=False),
    Column("mode", Integer, nullable=False),
    Column("seq", Integer, nullable=False, default=0),
    Column("src_host_id", BigInteger, nullable=True),
    Column("src_ip", String(64), nullable=True),
    Column("src_cloud_id", BigInteger, nullable=True),
    Column("src_path", String(4096), nullable=False),
    Column("dest_path", String(4096), nullable=True),
    Column("blob_id", String(64), nullable=True),
    Column("is_dir", Boolean, nullable=False, default=False),
    Column("file_mode", Integer, nullable=True),
    Column("status", Integer, nullable=False),
    Column("size", BigInteger, nullable=True),
    Column("speed", Float, nullable=True),
    Column("progress", Integer, nullable=False, default=0),
    Column("log_content", Text, nullable=False, default=""),
    # the full key of a file's row: each file's result is one look-up, not a scan of
    # its host's rows
    Index(None, "step_instance_id", "execute_count", "bk_host_id", "mode", "seq"),
)

# which hosts' agents may read a blob: the targets it was sent to
blob_readers = Table(
    "blob_readers",
    metadata,
    Column("blob_id", String(64), primary_key=True),
    Column("bk_host_id", BigInteger, primary_key=True, autoincrement=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("create_time", BigInteger, nullable=False, index=True),
    Column("app_code", String(128), nullable=False),
    Column("username", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("scope_type", String(32), nullable=True),
    Column("scope_id", String(64), nullable=True),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(128), nullable=False, default=""),
    Column("detail", JSON, nullable=True),
    Column("source_ip", String(64), nullable=False, default=""),
    # a scope's entries, newest first
    Index(None, "scope_type", "scope_id", "id"),
)

# business scripts (bk_biz_id set) and public scripts (bk_biz_id null); ids are strings on the wire
scripts = Table(
    "scripts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("bk_biz_id", BigInteger, nullable=True, index=True),
    Column("public", Boolean, nullable=False, default=False),
    Column("name", String(512), nullable=False),
    Column("script_language", Integer, nullable=False),
    Column("description", String(4096), nullable=False, default=""),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
    # labels people sort scripts by, kept as ",ops,backup," (empty: none) so that a
    # filter by one is a LIKE on any database
    Column("tags", String(512), nullable=False, default="", server_default=""),
    # a business's scripts, the last changed first
    Index(None, "bk_biz_id", "last_modify_time"),
)

script_versions = Table(
    "script_versions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("script_id", String(64), nullable=False, index=True),
    Column("version", String(128), nullable=False),
    Column("content", Text, nullable=False),
    # 0 draft, 1 online, 2 offline, 3 disabled
    Column("status", Integer, nullable=False, default=0),
    Column("version_desc", String(4096), nullable=False, default=""),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
    UniqueConstraint("script_id", "version"),
    # ids are never given out twice (migration 0021_stable_ids)
    sqlite_autoincrement=True,
)

# a job template: ordered steps and global variables, kept as bk-job-shaped JSON
job_templates = Table(
    "job_templates",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bk_biz_id", BigInteger, nullable=False, index=True),
    Column("name", String(512), nullable=False),
    Column("description", String(4096), nullable=False, default=""),
    # bumped on every change to steps or variables; plans remember the one they copied
    Column("version", Integer, nullable=False, default=1),
    Column("steps", JSON, nullable=False),
    Column("variables", JSON, nullable=False),
    Column("next_step_id", Integer, nullable=False, default=1),
    Column("next_variable_id", Integer, nullable=False, default=1),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
    UniqueConstraint("bk_biz_id", "name"),
    # ids are never given out twice (migration 0021_stable_ids)
    sqlite_autoincrement=True,
)

# an execution plan: a copy of its template's steps (each enabled or not) and variable values
job_plans = Table(
    "job_plans",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bk_biz_id", BigInteger, nullable=False, index=True),
    Column("template_id", BigInteger, nullable=False, index=True),
    Column("template_version", Integer, nullable=False),
    Column("name", String(512), nullable=False),
    Column("description", String(4096), nullable=False, default=""),
    Column("steps", JSON, nullable=False),
    Column("variables", JSON, nullable=False),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
    UniqueConstraint("template_id", "name"),
    # ids are never given out twice (migration 0021_stable_ids)
    sqlite_autoincrement=True,
)

crons = Table(
    "crons",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bk_biz_id", BigInteger, nullable=False, index=True),
    Column("scope_type", String(32), nullable=False),
    Column("scope_id", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    # indexed: syncing or deleting a plan looks up the crons that launch it
    Column("plan_id", BigInteger, nullable=False, index=True),
    # 1 running, 2 paused
    Column("status", Integer, nullable=False, default=2),
    Column("expression", String(255), nullable=True),
    # one-shot firing time (epoch s) when there is no expression
    Column("execute_time", BigInteger, nullable=True),
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("variables", JSON, nullable=True),
    # the next slot to fire (epoch s); null when nothing is left to fire
    Column("next_fire_at", BigInteger, nullable=True, index=True),
    Column("last_fire_at", BigInteger, nullable=True),
    Column("operator", String(128), nullable=False, default=""),
    Column("app_code", String(128), nullable=False, default=""),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
    # set only by migration 0023 on the later crons of a name that several crons of a
    # scope shared before names were held; cleared when the cron is renamed
    Column("name_shared", Boolean, nullable=False, default=False, server_default=false()),
    # a name is held by one cron of a scope whatever the number of writers; crons that
    # shared one before names were held keep it (the oldest of them is in the index, so
    # no new cron takes the name beside them)
    Index(
        "uq_crons_scope_name",
        "scope_type",
        "scope_id",
        "name",
        unique=True,
        sqlite_where=text("NOT name_shared"),
        postgresql_where=text("NOT name_shared"),
    ),
)

# one row per slot a cron fired: the unique key is what keeps a slot from running twice
cron_firings = Table(
    "cron_firings",
    metadata,
    Column("cron_id", BigInteger, primary_key=True, autoincrement=False),
    Column("slot", BigInteger, primary_key=True, autoincrement=False),
    Column("job_instance_id", BigInteger, nullable=True),
    # fired, skipped (missed beyond the grace window), failed (the plan could not start)
    Column("outcome", String(16), nullable=False),
    Column("message", String(1024), nullable=False, default=""),
    Column("node", String(64), nullable=False, default=""),
    # retention finds the old firings by it
    Column("create_time", BigInteger, nullable=False, index=True),
)

# a business's topology: sets (parent null) and the modules inside them
topo_nodes = Table(
    "topo_nodes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bk_biz_id", BigInteger, nullable=False, index=True),
    # "set" or "module"
    Column("node_type", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("parent_id", BigInteger, nullable=True, index=True),
    Column("create_time", BigInteger, nullable=False),
    UniqueConstraint("bk_biz_id", "node_type", "parent_id", "name"),
)

# which modules a host sits in (a host may be in several, as in CMDB)
host_modules = Table(
    "host_modules",
    metadata,
    Column("bk_host_id", BigInteger, primary_key=True, autoincrement=False),
    Column("module_id", BigInteger, primary_key=True, autoincrement=False, index=True),
)

# saved host filters, evaluated when a step's targets are resolved
dynamic_groups = Table(
    "dynamic_groups",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("bk_biz_id", BigInteger, nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("description", String(1024), nullable=False, default=""),
    Column("filter", JSON, nullable=False),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
    UniqueConstraint("bk_biz_id", "name"),
)

# hosts an admin lets businesses use although they belong to another one
host_whitelist = Table(
    "host_whitelist",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bk_host_id", BigInteger, nullable=False, index=True),
    # the businesses that may use the host
    Column("biz_ids", JSON, nullable=False),
    # SCRIPT_EXECUTE and/or FILE_DISTRIBUTION
    Column("action_scopes", JSON, nullable=False),
    Column("remark", String(1024), nullable=False, default=""),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
)

dangerous_rules = Table(
    "dangerous_rules",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("expression", String(1024), nullable=False),
    Column("script_language_list", JSON, nullable=False),
    Column("description", String(1024), nullable=False, default=""),
    # 1 scan (warn), 2 intercept (refuse)
    Column("action", Integer, nullable=False),
    # 0 off, 1 on
    Column("status", Integer, nullable=False, default=1),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
)

# where a business wants to hear about finished jobs
notify_configs = Table(
    "notify_configs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bk_biz_id", BigInteger, nullable=False, index=True),
    # "webhook" or "email"
    Column("channel", String(16), nullable=False),
    # a URL, or a list of addresses
    Column("target", JSON, nullable=False),
    # the webhook's HMAC key (encrypted)
    Column("secret", Text, nullable=True),
    # job statuses that trigger it (e.g. [3] success, [4, 9, 11, 13] failures)
    Column("statuses", JSON, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
)

# people: console passwords, console sessions and personal API tokens ----------
passwords = Table(
    "passwords",
    metadata,
    Column("username", String(128), primary_key=True),
    # scrypt$n$r$p$salt$digest (store/people.py)
    Column("hash", String(255), nullable=False),
    Column("update_time", BigInteger, nullable=False),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    # the sha256 of the cookie's value: a stolen database opens no session
    Column("id_hash", String(128), primary_key=True),
    Column("username", String(128), nullable=False, index=True),
    Column("csrf", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("create_time", BigInteger, nullable=False),
)

personal_tokens = Table(
    "personal_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("token_hash", String(128), nullable=False, unique=True),
    Column("username", String(128), nullable=False, index=True),
    Column("note", String(255), nullable=False, default=""),
    Column("expires_at", Float, nullable=False),
    Column("create_time", BigInteger, nullable=False),
)

# GSE process operations: one row per operation (task), one per host and process
proc_operations = Table(
    "proc_operations",
    metadata,
    Column("task_id", String(64), primary_key=True),
    # the businesses of the hosts it touched
    Column("biz_ids", JSON, nullable=False),
    Column("operator", String(128), nullable=False, default=""),
    Column("app_code", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False, index=True),
    # the node that asks its agents (null: made before nodes were recorded)
    Column("node_id", String(64), nullable=True, index=True),
)

proc_results = Table(
    "proc_results",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", String(64), nullable=False, index=True),
    # null: the agent id names no host the caller may use (answered, never operated on)
    Column("bk_host_id", BigInteger, nullable=True),
    # the agent id the caller named the host by ("<cloud>:<ip>" or bk_agent_id)
    Column("agent_id", String(255), nullable=False),
    Column("namespace", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("op", Integer, nullable=False),
    # GSE's codes: 115 handling, 0 success, others failures
    Column("error_code", Integer, nullable=False),
    Column("error_msg", Text, nullable=False, default=""),
    # the process state the agent reported (JSON text, as GSE answers it)
    Column("content", Text, nullable=False, default=""),
    Column("update_time", BigInteger, nullable=False),
    UniqueConstraint("task_id", "bk_host_id", "namespace", "name"),
)

# alert-driven self-healing: what an inbound alert may start, and every decision taken
heal_rules = Table(
    "heal_rules",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bk_biz_id", BigInteger, nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("dry_run", Boolean, nullable=False, default=False),
    # the webhook secret (encrypted): a bearer token or an HMAC key
    Column("secret", Text, nullable=False),
    # {"alertname": [...], "severity": [...], "labels": {name: value}}
    Column("match", JSON, nullable=False),
    Column("job_plan_id", BigInteger, nullable=False),
    # {variable name: template}
    Column("variables", JSON, nullable=False),
    # the plan's host variable, and the alert label naming the host (an IP or a host id)
    Column("host_variable", String(255), nullable=False, default=""),
    Column("host_label", String(255), nullable=False, default="instance"),
    Column("host_kind", String(16), nullable=False, default="ip"),
    Column("max_hosts", Integer, nullable=False, default=10),
    # at most rate_limit jobs per rate_window seconds, for the rule and for each host
    Column("rate_limit", Integer, nullable=False, default=10),
    Column("host_rate_limit", Integer, nullable=False, default=3),
    Column("rate_window", Integer, nullable=False, default=3600),
    # seconds after a job starts during which the rule (or the host) starts no other
    Column("cooldown", Integer, nullable=False, default=0),
    Column("host_cooldown", Integer, nullable=False, default=300),
    # who the jobs are started as
    Column("operator", String(128), nullable=False),
    Column("app_code", String(128), nullable=False, default=""),
    Column("creator", String(128), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("last_modify_user", String(128), nullable=False, default=""),
    Column("last_modify_time", BigInteger, nullable=False),
    UniqueConstraint("bk_biz_id", "name"),
)

heal_decisions = Table(
    "heal_decisions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("rule_id", BigInteger, nullable=False, index=True),
    Column("bk_biz_id", BigInteger, nullable=False),
    Column("fingerprint", String(128), nullable=False, default=""),
    Column("alertname", String(255), nullable=False, default=""),
    # firing or resolved
    Column("alert_status", String(16), nullable=False, default=""),
    # started, converged, skipped, refused, dry_run
    Column("decision", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("hosts", JSON, nullable=False),
    Column("variables", JSON, nullable=False),
    Column("job_instance_id", BigInteger, nullable=True),
    Column("create_time", BigInteger, nullable=False, index=True),
    # a rule's last started decision for each alert fingerprint: one seek per fingerprint
    Index(None, "rule_id", "decision", "fingerprint", "id"),
)

# the last load each host's agent reported (GSE's list_agent_info): one row per host
agent_loads = Table(
    "agent_loads",
    metadata,
    Column("bk_host_id", BigInteger, primary_key=True, autoincrement=False),
    # percent of the host's CPU and memory in use
    Column("cpu", Float, nullable=False),
    Column("mem", Float, nullable=False),
    # when the agent started, and when it reported this (epoch ms)
    Column("started", BigInteger, nullable=False),
    Column("report_time", BigInteger, nullable=False),
)

# check values of what every server on this database must hold (store/key_checks.py):
# "secret.key" (Cipher.check_value) and "tls/ca.pem" (the agent CA's fingerprint)
key_checks = Table(
    "key_checks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
    Column("create_time", BigInteger, nullable=False),
)
