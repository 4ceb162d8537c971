"""Sesame: secrets for workflow task pods. This package root is the stdlib-only SDK."""

from sesame.requests import RequestError, Secret
from sesame.sdk import (
    Context,
    SecretDeliveryError,
    SecretNotFoundError,
    Secrets,
    current_context,
    taskrun_manifest,
)
from sesame.tasks import Task, task

# The stdlib-only modules that make up the SDK: what a task image or `sesame run --remote` ships
# (`sesame run --remote` mounts them at /opt/sesame/sesame/ and runs `python3 -m sesame.runner`).
SDK_MODULES = ("__init__", "naming", "requests", "sdk", "tasks", "runner")

__all__ = [
    "Context",
    "RequestError",
    "Secret",
    "SecretDeliveryError",
    "SecretNotFoundError",
    "Secrets",
    "Task",
    "current_context",
    "task",
    "taskrun_manifest",
]
