"""Where a Workspace's status is decided, from what the hook observes only (no API calls).

``decision`` is the one entry: an invalid Workspace's status, or a planned one's status with whether it is
done and when to look again. It draws on ``conditions`` (ResourceReady, InferenceReady, JobStarted, ...),
``adapters`` (status.adapters, AdaptersReady), ``replicas`` (the scale subresource's fields),
``cold_start`` (status.coldStart) and ``scale_to_zero`` (status.scaleToZero).
"""
