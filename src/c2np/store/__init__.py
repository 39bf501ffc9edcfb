"""The on-disk dataset store: layout, build, manifest and the reading API."""
