"""scheduled occurrences are jobs: schedule_runs moves into jobs (kind 'schedule'), unique per
(schedule, due_at)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 23:50:00.000000
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OCCURRENCE_KIND = "schedule"

# The tables as this revision sees them, not as tables.py may later describe them.
_jobs = sa.table(
    "jobs",
    sa.column("id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("payload", sa.JSON),
    sa.column("state", sa.String),
    sa.column("attempts", sa.Integer),
    sa.column("max_attempts", sa.Integer),
    sa.column("lease_owner", sa.String),
    sa.column("lease_expires_at", sa.Float),
    sa.column("created_at", sa.Float),
    sa.column("started_at", sa.Float),
    sa.column("finished_at", sa.Float),
    sa.column("result", sa.JSON),
    sa.column("schedule", sa.String),
    sa.column("due_at", sa.Float),
)
_schedule_runs = sa.table(
    "schedule_runs",
    sa.column("id", sa.Integer),
    sa.column("schedule", sa.String),
    sa.column("due_at", sa.Float),
    sa.column("state", sa.String),
    sa.column("runner", sa.String),
    sa.column("lease_expires_at", sa.Float),
    sa.column("started_at", sa.Float),
    sa.column("finished_at", sa.Float),
    sa.column("outcome", sa.Text),
)


def _outcome(text: str | None) -> object:
    # schedule_runs kept the outcome as JSON text; jobs.result is a JSON column.
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"text": text}


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("schedule", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("due_at", sa.Float(), nullable=True))
        batch_op.create_unique_constraint("uq_jobs_schedule_due", ["schedule", "due_at"])
    conn = op.get_bind()
    rows = conn.execute(sa.select(_schedule_runs).order_by(_schedule_runs.c.id)).all()
    for r in rows:
        conn.execute(
            _jobs.insert().values(
                kind=OCCURRENCE_KIND,
                payload={},
                state=r.state,
                attempts=1,
                max_attempts=1,
                lease_owner=r.runner,
                lease_expires_at=r.lease_expires_at,
                created_at=r.started_at if r.started_at is not None else r.due_at,
                started_at=r.started_at,
                finished_at=r.finished_at,
                result=_outcome(r.outcome),
                schedule=r.schedule,
                due_at=r.due_at,
            )
        )
    op.drop_table("schedule_runs")


def downgrade() -> None:
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule", sa.String(length=200), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("runner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_runs")),
        sa.UniqueConstraint("schedule", "due_at", name="uq_schedule_runs_schedule_due"),
    )
    conn = op.get_bind()
    occurrences = _jobs.c.kind == OCCURRENCE_KIND
    for r in conn.execute(sa.select(_jobs).where(occurrences).order_by(_jobs.c.id)).all():
        conn.execute(
            _schedule_runs.insert().values(
                schedule=r.schedule,
                due_at=r.due_at,
                state=r.state,
                runner=r.lease_owner,
                lease_expires_at=r.lease_expires_at,
                started_at=r.started_at,
                finished_at=r.finished_at,
                outcome=None if r.result is None else json.dumps(r.result),
            )
        )
    conn.execute(_jobs.delete().where(occurrences))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_jobs_schedule_due", type_="unique")
        batch_op.drop_column("due_at")
        batch_op.drop_column("schedule")
