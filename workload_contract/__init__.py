"""What the operator's hooks and its workloads must agree on, defined once for both sides.

The hook server renders and checks a Workspace with these rules; the launcher, the gateway, the trainer
and the downloader apply the same rules inside the pods. Stdlib and pyyaml only, so the hooks image
carries this package without the serving runtime (`inference`) or the trainer (`tuning`).
"""
