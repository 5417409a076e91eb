"""Studies: a grid of bundles x label fractions x seeds run as bundle commands (``s4mi study``), and their
report with 95 % intervals, paired comparisons against a baseline, tables and figures (``s4mi report``)."""

from s4mi_monai.study.runner import RunOutcome, StudyResult, derive_datalist, run_study
from s4mi_monai.study.spec import Method, Run, SpecError, StudySpec, expand_runs, format_override, load_spec

__all__ = [
    "Method",
    "Run",
    "RunOutcome",
    "SpecError",
    "StudyResult",
    "StudySpec",
    "derive_datalist",
    "expand_runs",
    "format_override",
    "load_spec",
    "run_study",
]
