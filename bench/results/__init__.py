"""Results: the schema (one column table), the crash-safe writer, and loading.

- ``schema``: ``CORE_COLUMNS`` / ``ENV_COLUMNS`` / ``COLUMN_TYPES``, ``config_key``, ``build_row``;
- ``store``: ``ResultsWriter`` (append-only, fsync-ed rows and sidecar), default file names;
- ``load``: ``load_results`` (pandas, typed columns) and ``load_samples`` (the sidecar).

Nothing here imports torch or rich (tests/test_layers.py checks it).
"""

from bench.results.load import load_results, load_samples
from bench.results.schema import (
    BOOL_COLUMNS,
    COLUMN_TYPES,
    CORE_COLUMNS,
    ENV_COLUMNS,
    FAILED_STATUSES,
    INT_COLUMNS,
    MAX_REASON_CHARS,
    MEASUREMENT_COLUMNS,
    PARAM_PREFIX,
    SCHEMA_VERSION,
    STATUSES,
    SchemaMismatchError,
    build_row,
    columns_for,
    config_key,
    format_cell,
    one_line,
    param_column,
    samples_record,
)
from bench.results.store import (
    DEFAULT_RESULTS_DIR,
    ResultsFileError,
    ResultsLockedError,
    ResultsWriteError,
    ResultsWriter,
    check_compatible,
    completed_keys,
    default_out_path,
    glob_escape,
    latest_out_path,
    read_header,
    samples_path_for,
    validate_file,
)

__all__ = [
    "BOOL_COLUMNS",
    "COLUMN_TYPES",
    "CORE_COLUMNS",
    "DEFAULT_RESULTS_DIR",
    "ENV_COLUMNS",
    "FAILED_STATUSES",
    "INT_COLUMNS",
    "MAX_REASON_CHARS",
    "MEASUREMENT_COLUMNS",
    "PARAM_PREFIX",
    "ResultsFileError",
    "ResultsLockedError",
    "ResultsWriteError",
    "ResultsWriter",
    "SCHEMA_VERSION",
    "STATUSES",
    "SchemaMismatchError",
    "build_row",
    "check_compatible",
    "columns_for",
    "completed_keys",
    "config_key",
    "default_out_path",
    "format_cell",
    "glob_escape",
    "latest_out_path",
    "load_results",
    "load_samples",
    "one_line",
    "param_column",
    "read_header",
    "samples_path_for",
    "samples_record",
    "validate_file",
]
