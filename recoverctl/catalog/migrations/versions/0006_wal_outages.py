"""WAL outages (the timeline's WAL gaps) and a counter of failed WAL archive attempts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 02:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wal_outages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
        sa.Column("last_good_segment", sa.String(80)),
        sa.Column("first_failed_segment", sa.String(80), nullable=False),
        sa.Column("last_failed_segment", sa.String(80), nullable=False),
        sa.Column("last_failed_at", sa.Float, nullable=False),
        sa.Column("resumed_segment", sa.String(80)),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_wal_outages"),
    )
    op.create_index("ix_wal_outages_started", "wal_outages", ["started_at"])
    op.create_index("ix_wal_outages_source_started", "wal_outages", ["source", "started_at"])
    # A source failing now (its newest attempt failed) gets its open outage from what
    # wal_status kept, so the gap shows from the start; the counter starts at that one failure.
    with op.batch_alter_table("wal_status") as batch:
        batch.add_column(sa.Column("failures_total", sa.Integer, nullable=False, server_default="0"))
    wal_status = sa.table(
        "wal_status",
        sa.column("source", sa.String),
        sa.column("last_segment", sa.String),
        sa.column("last_archived_at", sa.Float),
        sa.column("last_failed_segment", sa.String),
        sa.column("last_failed_at", sa.Float),
        sa.column("failures_total", sa.Integer),
    )
    outages = sa.table(
        "wal_outages",
        sa.column("source", sa.String),
        sa.column("started_at", sa.Float),
        sa.column("last_good_segment", sa.String),
        sa.column("first_failed_segment", sa.String),
        sa.column("last_failed_segment", sa.String),
        sa.column("last_failed_at", sa.Float),
        sa.column("failures", sa.Integer),
    )
    conn = op.get_bind()
    failed = wal_status.c.last_failed_at.isnot(None)
    conn.execute(wal_status.update().where(failed).values(failures_total=1))
    failing = conn.execute(
        sa.select(wal_status).where(
            failed,
            sa.or_(
                wal_status.c.last_archived_at.is_(None),
                wal_status.c.last_failed_at > wal_status.c.last_archived_at,
            ),
        )
    ).all()
    for row in failing:
        conn.execute(
            outages.insert().values(
                source=row.source,
                started_at=row.last_failed_at,
                last_good_segment=row.last_segment,
                first_failed_segment=row.last_failed_segment or "?",
                last_failed_segment=row.last_failed_segment or "?",
                last_failed_at=row.last_failed_at,
                failures=1,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("wal_status") as batch:
        batch.drop_column("failures_total")
    op.drop_index("ix_wal_outages_source_started", table_name="wal_outages")
    op.drop_index("ix_wal_outages_started", table_name="wal_outages")
    op.drop_table("wal_outages")
