"""The store's tables (SQLAlchemy Core).

Core, not the ORM: agents move thousands of rows per statement, and the
tables are the contract between agents that share nothing but the database.
Times are float epoch seconds so that SQLite and PostgreSQL compare them alike.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
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
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# JSON on SQLite, JSONB on PostgreSQL.
Json = JSON().with_variant(JSONB(), "postgresql")
# Integer primary keys that autoincrement on both databases.
Id = BigInteger().with_variant(Integer(), "sqlite")

workflows = Table(
    "workflows",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("owner", String(255), nullable=False, default="local"),
    Column("status", String(32), nullable=False, index=True),
    Column("template", Json, nullable=False),
    Column("params", Json, nullable=False),
    # Run-time metadata: evaluated conditions, loop iterations, loop outcomes.
    Column("meta", Json, nullable=False),
    Column("backend", String(64)),
    Column("priority", Integer, nullable=False, default=0),
    # The Clerk re-plans while dirty_seq > clean_seq; a counter, not a flag, so
    # that a change made while the Clerk works is never cleared unseen.
    Column("dirty_seq", Integer, nullable=False, default=1),
    Column("clean_seq", Integer, nullable=False, default=0),
    Column("lock_owner", String(64)),
    Column("lock_expiry", Float),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
)
Index("ix_workflows_dirty", workflows.c.status, workflows.c.dirty_seq, workflows.c.clean_seq)

works = Table(
    "works",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workflow_id", Id, ForeignKey("workflows.id"), nullable=False, index=True),
    Column("name", String(512), nullable=False),  # instance name, e.g. refine[1].step
    Column("template_name", String(255), nullable=False),
    # "function", "command", "workflow" (sub-workflow), "loop", "condition"
    Column("kind", String(16), nullable=False),
    Column("status", String(32), nullable=False, index=True),
    # The resolved instance: template of the work, substituted parameters, kwargs_list.
    Column("spec", Json, nullable=False),
    Column("backend", String(64)),
    Column("retries", Integer, nullable=False, default=0),
    Column("loop", String(512)),
    Column("iteration", Integer),
    Column("n_jobs", Integer, nullable=False, default=0),
    Column("n_finished", Integer, nullable=False, default=0),
    Column("n_failed", Integer, nullable=False, default=0),
    Column("n_cancelled", Integer, nullable=False, default=0),
    Column("result", Json),
    Column("reason", String(255)),  # why skipped / failed, for the user
    Column("lock_owner", String(64)),
    Column("lock_expiry", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    UniqueConstraint("workflow_id", "name", name="uq_works_workflow_name"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workflow_id", Id, nullable=False),
    Column("work_id", Id, ForeignKey("works.id"), nullable=False),
    Column("idx", Integer, nullable=False),  # position in the work (kwargs item, file)
    Column("status", String(16), nullable=False),
    Column("pending", Integer, nullable=False, default=0),  # unmet parents (+1 waiting file)
    Column("kwargs", Json),  # this job's sweep item, if any
    Column("file_id", Id),  # data-aware: the input file this job processes
    Column("backend", String(64)),
    Column("external_id", String(255)),  # id in the backend (Slurm job, Dask key, ...)
    Column("attempt", Integer, nullable=False, default=0),
    Column("retries_used", Integer, nullable=False, default=0),
    Column("lock_owner", String(64)),
    Column("lock_expiry", Float),
    # Audit counters: the exactly-once invariants are checked against these.
    Column("release_count", Integer, nullable=False, default=0),
    Column("success_count", Integer, nullable=False, default=0),
    Column("result", Json),
    Column("error", Text),
    Column("exit_code", Integer),
    Column("wall_s", Float),
    Column("max_rss_kb", Integer),
    Column("log_path", Text),
    Column("blob", String(64)),  # sha256 of a pickled result kept in the cache
    Column("inline", Text),  # a small pickled value (or exception), base64: opaque to the server
    Column("created_at", Float, nullable=False),
    Column("submitted_at", Float),
    Column("started_at", Float),
    Column("finished_at", Float),
    UniqueConstraint("work_id", "idx", name="uq_jobs_work_idx"),
    sqlite_autoincrement=True,  # ids can be reserved ahead (store.jobs.reserve_job_ids)
)
Index("ix_jobs_status_work", jobs.c.status, jobs.c.work_id)
Index("ix_jobs_workflow", jobs.c.workflow_id)
Index("ix_jobs_lock_owner", jobs.c.lock_owner)
Index("ix_jobs_file", jobs.c.file_id)

job_deps = Table(
    "job_deps",
    metadata,
    Column("parent_id", Id, primary_key=True),
    Column("child_id", Id, primary_key=True),
)
Index("ix_job_deps_child", job_deps.c.child_id)

datasets = Table(
    "datasets",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(512), nullable=False),
    # Every user is a tenant: a dataset's name is unique per owner, and only its
    # owner (or an admin) reads or changes it (schema 0006; names were global before).
    Column("owner", String(255), nullable=False, default="local"),
    Column("status", String(32), nullable=False, default="open"),
    Column("meta", Json),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("owner", "name", name="uq_datasets_owner_name"),
)

files = Table(
    "files",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("dataset_id", Id, ForeignKey("datasets.id"), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("status", String(32), nullable=False, default="new"),  # new | available
    Column("size", BigInteger),
    Column("meta", Json),
    Column("created_at", Float, nullable=False),
    Column("available_at", Float),
    UniqueConstraint("dataset_id", "name", name="uq_files_dataset_name"),
)

# The database event bus: persistent, several processes.
events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("key", String(255)),
    Column("priority", Integer, nullable=False, default=0),
    Column("payload", Json),
    Column("created_at", Float, nullable=False),
)

# Outbound notifications the Conductor delivers.
messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workflow_id", Id, index=True),
    Column("kind", String(64), nullable=False),
    Column("status", String(16), nullable=False, default="new", index=True),
    Column("payload", Json),
    Column("created_at", Float, nullable=False),
    Column("sent_at", Float),
)

# Metadata of content-addressed blobs; the bytes live in the cache directory.
blobs = Table(
    "blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("kind", String(32)),
    Column("owner", String(255)),  # the first recorder; who may read is in blob_grants
    Column("created_at", Float, nullable=False),
)

# Who may read a blob: one row per (digest, owner) — the same content uploaded or
# produced by two users is two grants of one file. A user reads a blob only with a
# grant (admins read all); a job reads its run owner's (schema 0006). Blobs without
# a grant (older than 0006 and not derivable) are readable by admins only.
blob_grants = Table(
    "blob_grants",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("owner", String(255), primary_key=True),
    Column("created_at", Float, nullable=False),
)
Index("ix_blob_grants_owner", blob_grants.c.owner)

# Measured run time of each function (a FaaT payload's sha256, or a ``module:function``
# reference): what a backend policy such as "short functions stay local" reasons on.
function_stats = Table(
    "function_stats",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("mean_wall_s", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Live agent processes; a lock whose owner stopped heart-beating is reclaimable.
agents = Table(
    "agents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("roles", String(255), nullable=False),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("started_at", Float, nullable=False),
    Column("heartbeat", Float, nullable=False),
)

# Provenance of a job's result (schema 0007, idds_jupyter.model.provenance for the hashing
# rules): one row per job that ended (its last attempt), written in the results'
# transaction. ``cached_from``: the job whose result a memoized job took.
provenance = Table(
    "provenance",
    metadata,
    Column("job_id", Id, primary_key=True),
    Column("workflow_id", Id, nullable=False),
    Column("work_id", Id, nullable=False),
    Column("owner", String(255)),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("code_hash", String(64)),
    Column("input_hash", String(64)),
    Column("cache_key", String(64)),
    Column("result_hash", String(64)),
    Column("env_id", String(64)),
    Column("backend", String(64)),
    Column("cached_from", Id),
    Column("started_at", Float),
    Column("finished_at", Float),
)
Index("ix_provenance_workflow", provenance.c.workflow_id)
Index("ix_provenance_cache_key", provenance.c.cache_key, provenance.c.status)

# The environments jobs ran in (Python, platform, host, package versions), by digest.
environments = Table(
    "environments",
    metadata,
    Column("env_id", String(64), primary_key=True),
    Column("info", Json, nullable=False),
    Column("created_at", Float, nullable=False),
)

__all__ = [
    "agents",
    "blob_grants",
    "blobs",
    "datasets",
    "environments",
    "events",
    "files",
    "function_stats",
    "job_deps",
    "jobs",
    "messages",
    "metadata",
    "provenance",
    "workflows",
    "works",
]

# The REST service's tables live on the same metadata (imported last: it imports this module).
import idds_jupyter.store.auth_tables  # noqa: E402, F401
