"""The sidecar's stripped-down Django project: nothing from the main site."""
