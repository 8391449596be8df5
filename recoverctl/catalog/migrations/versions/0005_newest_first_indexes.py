"""indexes for newest-first reads: a source's newest backups, the timeline's runs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 01:05:00.000000
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # last_backups reads a source's runs and snapshots newest first and stops after a page or two.
    op.create_index("ix_runs_source_started", "runs", ["source", "started_at"])
    # ...and then looks for older runs that finished later than what it found (few rows).
    op.create_index("ix_runs_source_finished", "runs", ["source", "finished_at"])
    op.create_index("ix_snapshots_source_time", "snapshots", ["source", "time"])
    # The timeline pages all runs newest first.
    op.create_index("ix_runs_started", "runs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_started", table_name="runs")
    op.drop_index("ix_snapshots_source_time", table_name="snapshots")
    op.drop_index("ix_runs_source_finished", table_name="runs")
    op.drop_index("ix_runs_source_started", table_name="runs")
