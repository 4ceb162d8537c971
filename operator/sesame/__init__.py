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

__all__ = [
    "Context",
    "Secret",
    "SecretDeliveryError",
    "SecretNotFoundError",
    "Secrets",
    "current_context",
    "taskrun_manifest",
]
