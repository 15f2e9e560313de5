"""Keep the sidecar from ever changing the main site's database schema or data."""
