"""The Workspace side: CRD types, validation, planning, nodes, conditions, and the children it builds."""
