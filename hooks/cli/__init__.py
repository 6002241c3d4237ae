"""`python -m hooks`: render a Workspace's children, serve the hooks, regenerate README tables."""
