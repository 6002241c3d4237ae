"""The InferenceSet hooks: a CompositeController whose child is one Workspace (and a KEDA ScaledObject)."""
