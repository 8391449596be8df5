"""incidents, their timelines and their escalation notifications

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 00:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("subject", sa.String(200)),
        sa.Column("subject_type", sa.String(20)),
        sa.Column("group_key", sa.Text),
        sa.Column("acknowledged_at", sa.Float),
        sa.Column("acknowledged_by", sa.String(200)),
        sa.Column("resolved_at", sa.Float),
        sa.Column("resolved_by", sa.String(200)),
        sa.Column("resolution", sa.Text),
        sa.Column("escalation_level", sa.Integer, nullable=False),
        sa.Column("details", sa.JSON),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    op.create_index("ix_incidents_state_subject", "incidents", ["state", "subject"])
    op.create_table(
        "incident_timeline",
        sa.Column("id", sa.Integer),
        sa.Column("incident_id", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("details", sa.JSON),
        sa.Column("event_id", sa.Integer),
        sa.Column("alert_id", sa.Integer),
        sa.Column("job_id", sa.Integer),
        sa.Column("rollback_id", sa.Integer),
        sa.PrimaryKeyConstraint("id", name="pk_incident_timeline"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_incident_timeline_incident_id_incidents"
        ),
    )
    op.create_index("ix_incident_timeline_incident_id", "incident_timeline", ["incident_id"])
    op.create_table(
        "incident_escalations",
        sa.Column("id", sa.Integer),
        sa.Column("incident_id", sa.Integer, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("repeat", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("claimed_until", sa.Float, nullable=False),
        sa.Column("due_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float),
        sa.Column("result", sa.JSON),
        sa.PrimaryKeyConstraint("id", name="pk_incident_escalations"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_incident_escalations_incident_id_incidents"
        ),
        sa.UniqueConstraint("incident_id", "level", "repeat", name="uq_incident_escalations_step"),
    )


def downgrade() -> None:
    op.drop_table("incident_escalations")
    op.drop_index("ix_incident_timeline_incident_id", table_name="incident_timeline")
    op.drop_table("incident_timeline")
    op.drop_index("ix_incidents_state_subject", table_name="incidents")
    op.drop_table("incidents")
