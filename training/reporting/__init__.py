"""The run report: one HTML page per pipeline run, from the tables and run folders."""
