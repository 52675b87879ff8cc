"""The pipeline's Delta tables: specs and paths (`specs`), writes (`writes`), history (`history`)
and the rollback of a failed job (`rollback`). The names below are the package's public API."""
from demandcast.tables.history import (commit_info, current_version, effective_commit_metadata,
                                       files_of_version, last_commit_time, metadata_of_current_state)
from demandcast.tables.rollback import TableWrite, restore_table, rolled_back_on_failure, tables_to_restore
from demandcast.tables.specs import (NO_DELETION_VECTORS, TABLE_NAMES, TableSpec, absolute_uri,
                                     is_delta_table, read_optional_table, read_table, require_some_table,
                                     table_path)
from demandcast.tables.writes import (documented, documented_schema, ensure_table, merge_table,
                                      partition_predicate, replace_predicate, require_same_schema,
                                      schema_differences, with_retries, write_table)

__all__ = [
    "NO_DELETION_VECTORS", "TABLE_NAMES", "TableSpec", "TableWrite", "absolute_uri", "commit_info",
    "current_version", "documented", "effective_commit_metadata", "documented_schema", "ensure_table", "files_of_version",
    "is_delta_table", "last_commit_time", "merge_table", "metadata_of_current_state",
    "partition_predicate", "read_optional_table", "read_table", "replace_predicate",
    "require_same_schema", "require_some_table", "restore_table", "rolled_back_on_failure",
    "schema_differences", "table_path", "tables_to_restore", "with_retries", "write_table",
]
