"""Kubernetes plumbing shared by the operator's adapters (controller, webhook): client, inventory."""
