-- Pages of a workspace's workflows come in rowid order (oldest first). An
-- index ends with the rowid, so these two hold a workspace's workflows, and
-- those of one type, in page order: a page reads its rows straight from the
-- index instead of sorting every matching row (definitions included) first,
-- and the total is counted from the index alone. They replace the index on
-- (workspace_id, kind, created_at), whose order no query used.
DROP INDEX workflows_workspace_idx;
CREATE INDEX workflows_workspace_page_idx ON workflows (workspace_id);
CREATE INDEX workflows_workspace_kind_page_idx ON workflows (workspace_id, kind);
