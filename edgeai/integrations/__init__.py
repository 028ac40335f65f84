"""Optional integrations with other systems (each imports its system only when used)."""
