"""Kubernetes operator that keeps the IAM instance profile of EC2 instances in the state
that InstanceProfileBinding resources declare."""

__version__ = "0.1.0"
