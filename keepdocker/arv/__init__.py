"""Arvados access for keepdocker: client set-up, the Docker image catalog, Keep transfer and migration records."""
