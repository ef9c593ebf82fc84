"""Docker image archives: one image model, readers and writers for each format, and the v1 to v2 upgrade."""
