"""The catalog schema (SQLAlchemy Core). Times are UTC Unix seconds (float) on every backend.

Changing a table here needs a new alembic revision in catalog/migrations/versions.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# One row per backup/restore/verify/prune/... execution.
runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("source", String(200)),
    Column("repository", String(500)),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("status", String(20), nullable=False),  # running / succeeded / partial / failed
    Column("bytes_read", Integer),
    Column("bytes_added", Integer),
    Column("snapshot_id", String(80)),
    Column("error", Text),
    Column("details", JSON),
    Index("ix_runs_kind_source_started", "kind", "source", "started_at"),
    Index("ix_runs_source_started", "source", "started_at"),
    Index("ix_runs_source_finished", "source", "finished_at"),
    Index("ix_runs_started", "started_at"),
)

# Snapshots as last seen in the repository; `catalog sync` rebuilds these from the repository.
snapshots = Table(
    "snapshots",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("repository", String(500), nullable=False),
    Column("time", Float, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("source", String(200)),
    Column("paths", JSON),
    Column("tags", JSON),
    Column("parent", String(80)),
    Column("summary", JSON),
    Index("ix_snapshots_source_time", "source", "time"),
)

# Snapshots that forget must keep: running drills, release markers.
pins = Table(
    "pins",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("snapshot_id", String(80), nullable=False, index=True),
    Column("reason", String(200), nullable=False),
    Column("owner", String(200)),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
)

# The one table of leased work: webhook actions (queued, then claimed by a worker) and scheduled
# occurrences (kind "schedule", created by the runner that claims them). An occurrence's
# (schedule, due_at) is unique, so of several runners only the first to insert it runs it; webhook
# jobs leave both NULL, which a unique constraint never compares.
jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("payload", JSON, nullable=False),
    # queued / running / succeeded / failed / abandoned; occurrences also skipped
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=1),
    Column("dedup_key", String(300), unique=True),
    Column("lease_owner", String(200)),
    Column("lease_expires_at", Float),
    # A queued job is not claimed before this time: a failed attempt to be retried later.
    Column("not_before", Float),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("result", JSON),
    Column("error", Text),
    Column("schedule", String(200)),
    Column("due_at", Float),
    Index("ix_jobs_state_created", "state", "created_at"),
    UniqueConstraint("schedule", "due_at", name="uq_jobs_schedule_due"),
)

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("name", String(200), primary_key=True),  # e.g. scheduler:<host>:<pid>, worker:...
    Column("role", String(40), nullable=False),
    Column("at", Float, nullable=False),
    Column("details", JSON),
)

releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("service", String(200), nullable=False),
    Column("version", String(200), nullable=False),
    Column("image", String(500)),
    Column("digest", String(200)),
    Column("release_dir", String(1000)),
    Column("schema_revision", String(200)),
    Column("script_location", String(1000)),
    Column("restore_point", String(200)),
    Column("restore_lsn", String(40)),
    Column("operator", String(200)),
    Column("created_at", Float, nullable=False),
    Column("status", String(20), nullable=False),  # deploying / live / good / failed / rolled-back
    Column("details", JSON),
    Index("ix_releases_service_created", "service", "created_at"),
)

rollbacks = Table(
    "rollbacks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("service", String(200), nullable=False, index=True),
    Column("from_release", Integer, ForeignKey("releases.id")),
    Column("to_release", Integer, ForeignKey("releases.id")),
    Column("schema_mode", String(20), nullable=False),
    Column("state", String(20), nullable=False),  # running / succeeded / failed / interrupted
    Column("reason", Text),
    Column("actor", String(200)),
    Column("owner", String(200)),  # host:pid of the process driving it
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("plan", JSON),
    Column("error", Text),
)

rollback_steps = Table(
    "rollback_steps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("rollback_id", Integer, ForeignKey("rollbacks.id"), nullable=False, index=True),
    Column("seq", Integer, nullable=False),
    Column("name", String(40), nullable=False),
    Column("state", String(20), nullable=False),  # pending / running / done / failed / skipped
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("output", JSON),
)

drills = Table(
    "drills",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("source", String(200)),
    Column("snapshot_id", String(80)),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("verdict", String(20)),  # running / pass / fail
    Column("rto_s", Float),
    Column("rpo_s", Float),
    Column("rto_target_s", Float),
    Column("rpo_target_s", Float),
    Column("recovery_point", String(200)),
    Column("phases", JSON),
    Column("checks", JSON),
    Column("bytes", Integer),
    Column("reason", Text),
    Column("details", JSON),
    Index("ix_drills_source_started", "source", "started_at"),
)

restore_points = Table(
    "restore_points",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("lsn", String(40)),
    Column("timeline", Integer),
    Column("created_at", Float, nullable=False),
    Column("release_id", Integer),
)

# Per-source WAL archive progress: what RPO exposure is computed from.
wal_status = Table(
    "wal_status",
    metadata,
    Column("source", String(200), primary_key=True),
    Column("last_segment", String(80)),
    Column("last_archived_at", Float),
    Column("last_failed_segment", String(80)),
    Column("last_failed_at", Float),
    Column("segments_total", Integer, nullable=False, default=0),
    # Every failed archive attempt ever recorded (a counter: recoverctl_wal_push_failures_total).
    Column("failures_total", Integer, nullable=False, default=0, server_default="0"),
)

# WAL outages: from the first failed archive attempt of a source (wal push, the pusher, the stream
# receiver's upload) to the next success. wal_status keeps only the last failure; this keeps them
# all, for the timeline's WAL gaps. An open outage has no ended_at.
wal_outages = Table(
    "wal_outages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(200), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("last_good_segment", String(80)),  # the newest archived before it began
    Column("first_failed_segment", String(80), nullable=False),
    Column("last_failed_segment", String(80), nullable=False),
    Column("last_failed_at", Float, nullable=False),
    Column("resumed_segment", String(80)),  # the one whose archiving ended it
    Column("failures", Integer, nullable=False),
    Column("error", Text),
    Index("ix_wal_outages_started", "started_at"),
    Index("ix_wal_outages_source_started", "source", "started_at"),
)

verified_packs = Table(
    "verified_packs",
    metadata,
    Column("repository", String(500), primary_key=True),
    Column("pack", String(80), primary_key=True),
    Column("verified_at", Float, nullable=False),
    Column("ok", Boolean, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("received_at", Float, nullable=False),
    Column("source", String(20), nullable=False),  # alertmanager / grafana / generic
    Column("alertname", String(200)),
    Column("service", String(200)),
    Column("fingerprint", String(200)),
    Column("starts_at", String(60)),
    Column("group_key", Text),
    Column("status", String(20)),  # firing / resolved
    Column("policy", String(200)),
    Column("decision", String(20), nullable=False),  # acted / deduplicated / suppressed / ignored / rejected
    Column("reason", Text),
    Column("job_id", Integer),
    Column("incident_key", String(300), unique=True),
    Column("labels", JSON),
    Index("ix_alerts_received", "received_at"),
)

# Everything worth telling someone about; notifiers deliver from here.
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("kind", String(60), nullable=False),  # backup.failed, drill.failed, rollback.succeeded, ...
    Column("severity", String(20), nullable=False),  # critical / warning / info
    Column("subject", String(200)),  # source or service
    Column("summary", Text, nullable=False),
    Column("details", JSON),
    Column("dedup_key", String(300)),
    Column("delivered", Boolean, nullable=False, default=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Integer, ForeignKey("events.id")),
    Column("at", Float, nullable=False),
    Column("channel", String(200), nullable=False),
    Column("channel_type", String(40), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("status", String(20), nullable=False),  # sent / failed
    Column("attempts", Integer, nullable=False),
    Column("http_status", Integer),
    Column("error", Text),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(500)),
    Column("outcome", String(40), nullable=False),
    Column("details", JSON),
    Index("ix_audit_log_at", "at"),
)

# An incident: what an alert acted on, a failed drill, backup, WAL archive or rollback, or a stale
# RPO opened, with everything about the same service/source joining it while it is open.
incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("opened_at", Float, nullable=False),
    Column("state", String(20), nullable=False),  # open / acknowledged / resolved / reopened
    Column("severity", String(20), nullable=False),
    Column("kind", String(60), nullable=False),  # what opened it: alert, drill.failed, rpo.exceeded, ...
    Column("title", Text, nullable=False),
    Column("subject", String(200)),  # the service or source it is about
    Column("subject_type", String(20)),  # service / source / schedule / repository
    Column("group_key", Text),
    Column("acknowledged_at", Float),
    Column("acknowledged_by", String(200)),
    Column("resolved_at", Float),
    Column("resolved_by", String(200)),
    Column("resolution", Text),
    Column("escalation_level", Integer, nullable=False, default=0),  # highest level notified
    Column("details", JSON),
    Index("ix_incidents_state_subject", "state", "subject"),
)

# One ordered timeline per incident: what was recorded as it happened. Rollback steps and
# deliveries of linked events are read from rollback_steps and notifications, not copied here.
incident_timeline = Table(
    "incident_timeline",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("kind", String(60), nullable=False),
    Column("summary", Text, nullable=False),
    Column("details", JSON),
    Column("event_id", Integer),
    Column("alert_id", Integer),
    Column("job_id", Integer),
    Column("rollback_id", Integer),
)

# Escalation notifications: one row per (incident, level, repeat), inserted by the runner that
# sends it, so of several runners exactly one does; a claim whose runner died is taken over once
# its lease expires.
incident_escalations = Table(
    "incident_escalations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("level", Integer, nullable=False),
    Column("repeat", Integer, nullable=False),
    Column("state", String(20), nullable=False),  # sending / sent
    Column("owner", String(200), nullable=False),
    Column("claimed_until", Float, nullable=False),
    Column("due_at", Float, nullable=False),
    Column("sent_at", Float),
    Column("result", JSON),
    UniqueConstraint("incident_id", "level", "repeat", name="uq_incident_escalations_step"),
)
