"""Every MLflow read and write of evidence: the run schema, matrix readers, cell jobs, knowledge, imports."""
