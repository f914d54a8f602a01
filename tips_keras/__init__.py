"""tips-keras (package init is owned by the core; keep empty while building)."""
