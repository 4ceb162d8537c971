"""Sesame: secrets for workflow task pods. This package root is the stdlib-only SDK."""

from sesame.sdk import (
    Context,
    Secret,
    SecretDeliveryError,
    SecretNotFoundError,
    Secrets,
    current_context,
    taskrun_manifest,
)

# The stdlib-only modules that make up the SDK: what a task image or `sesame run --remote` ships.
SDK_MODULES = ("__init__", "naming", "sdk")

__all__ = [
    "Context",
    "Secret",
    "SecretDeliveryError",
    "SecretNotFoundError",
    "Secrets",
    "current_context",
    "taskrun_manifest",
]
