import pytest

from idds_jupyter.model import (
    JOB_MACHINE,
    WORK_MACHINE,
    WORKFLOW_MACHINE,
    IllegalTransition,
    JobStatus,
    WorkflowStatus,
    WorkStatus,
)


def test_enum_values():
    assert [s.value for s in WorkflowStatus] == [
        "new",
        "running",
        "suspended",
        "finished",
        "subfinished",
        "failed",
        "aborted",
    ]
    assert [s.value for s in WorkStatus] == [
        "new",
        "running",
        "suspended",
        "finished",
        "subfinished",
        "failed",
        "aborted",
        "skipped",
    ]
    assert [s.value for s in JobStatus] == [
        "pending",
        "ready",
        "submitted",
        "running",
        "finished",
        "failed",
        "cancelled",
    ]
    assert str(JobStatus.READY) == "ready"


def test_job_transitions():
    assert JOB_MACHINE.allowed("pending", "ready")
    assert JOB_MACHINE.allowed(JobStatus.FAILED, JobStatus.READY)
    assert JOB_MACHINE.allowed("cancelled", "pending")
    assert not JOB_MACHINE.allowed("finished", "ready")
    assert not JOB_MACHINE.allowed("pending", "running")
    assert not JOB_MACHINE.allowed("bogus", "ready")
    JOB_MACHINE.check("submitted", "finished")
    with pytest.raises(IllegalTransition) as exc:
        JOB_MACHINE.check("finished", "running")
    msg = str(exc.value)
    assert "job" in msg and "finished" in msg and "running" in msg
    assert isinstance(exc.value, ValueError)
    with pytest.raises(IllegalTransition):
        JOB_MACHINE.check("nope", "ready")


def test_sources_for_bulk_updates():
    assert JOB_MACHINE.sources("ready") == {
        JobStatus.PENDING,
        JobStatus.SUBMITTED,
        JobStatus.RUNNING,
        JobStatus.FAILED,
    }
    assert JOB_MACHINE.sources(JobStatus.CANCELLED) == {
        JobStatus.PENDING,
        JobStatus.READY,
        JobStatus.SUBMITTED,
        JobStatus.RUNNING,
    }
    assert JOB_MACHINE.sources("pending") == {JobStatus.READY, JobStatus.CANCELLED}
    assert WORK_MACHINE.sources("skipped") == {WorkStatus.NEW}
    assert WORKFLOW_MACHINE.sources("running") == {
        WorkflowStatus.NEW,
        WorkflowStatus.SUSPENDED,
        WorkflowStatus.FAILED,
        WorkflowStatus.SUBFINISHED,
    }


def test_work_and_workflow_transitions():
    WORK_MACHINE.check("new", "skipped")
    WORK_MACHINE.check("failed", "running")
    WORK_MACHINE.check("subfinished", "running")
    for dead in ("finished", "aborted", "skipped"):
        assert WORK_MACHINE.targets(dead) == frozenset()
    with pytest.raises(IllegalTransition, match="work"):
        WORK_MACHINE.check("skipped", "running")
    WORKFLOW_MACHINE.check("new", "failed")
    with pytest.raises(IllegalTransition, match="workflow"):
        WORKFLOW_MACHINE.check("finished", "running")


def test_terminal_sets():
    assert JOB_MACHINE.terminal == {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED}
    assert WORK_MACHINE.terminal == {
        WorkStatus.FINISHED,
        WorkStatus.SUBFINISHED,
        WorkStatus.FAILED,
        WorkStatus.ABORTED,
        WorkStatus.SKIPPED,
    }
    assert WORKFLOW_MACHINE.terminal == {
        WorkflowStatus.FINISHED,
        WorkflowStatus.SUBFINISHED,
        WorkflowStatus.FAILED,
        WorkflowStatus.ABORTED,
    }
    assert WORK_MACHINE.is_terminal("skipped")
    assert not WORK_MACHINE.is_terminal("running")
