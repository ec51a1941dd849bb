"""The idds_jupyter data model: Work, Workflow, Condition, Parameter, Loop, statuses, planning.

Pure data and graph logic — no I/O, and no imports of the rest of idds_jupyter,
so every layer (store, agents, worker, kernel) can depend on it.
"""

from .analysis import BUILTIN_NAMES, EDGE_KINDS, JOB_NAMES, Analysis, analyze
from .condition import Condition
from .errors import ExpressionError, TemplateError
from .expression import FUNCTIONS, Expression, expression
from .loop import Loop
from .parameter import (
    PARAMETER_TYPES,
    Parameter,
    escape,
    parse_template,
    placeholders,
    substitute,
    substitute_partial,
)
from .plan import Plan, RunState, WorkInstance, WorkState, plan, render_job
from .status import (
    JOB_MACHINE,
    WORK_MACHINE,
    WORKFLOW_MACHINE,
    IllegalTransition,
    JobStatus,
    StateMachine,
    WorkflowStatus,
    WorkStatus,
)
from .template import load_schema
from .work import FUNCTION_REF, JOB_DEP_PATTERNS, POLICIES, JobDep, Work
from .workflow import Workflow

__all__ = [
    "BUILTIN_NAMES",
    "EDGE_KINDS",
    "FUNCTIONS",
    "FUNCTION_REF",
    "JOB_DEP_PATTERNS",
    "JOB_MACHINE",
    "JOB_NAMES",
    "PARAMETER_TYPES",
    "POLICIES",
    "WORKFLOW_MACHINE",
    "WORK_MACHINE",
    "Analysis",
    "Condition",
    "Expression",
    "ExpressionError",
    "IllegalTransition",
    "JobDep",
    "JobStatus",
    "Loop",
    "Parameter",
    "Plan",
    "RunState",
    "StateMachine",
    "TemplateError",
    "Work",
    "WorkInstance",
    "WorkState",
    "WorkStatus",
    "Workflow",
    "WorkflowStatus",
    "analyze",
    "escape",
    "expression",
    "load_schema",
    "parse_template",
    "placeholders",
    "plan",
    "render_job",
    "substitute",
    "substitute_partial",
]
