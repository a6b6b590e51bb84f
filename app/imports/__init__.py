"""Purchase history files: reading them, and importing them through the ingestion path."""
