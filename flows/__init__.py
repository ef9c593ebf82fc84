"""Prefect flows of keepdocker-flows: push-image and migrate-images."""
