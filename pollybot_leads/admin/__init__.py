"""The admin API, its service (shared with the CLI), the audit and deletion jobs."""
