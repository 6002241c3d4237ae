"""Metacontroller hooks for Kaito-compatible Workspaces and AKS GPU Machines."""
