"""The node-local weights cache, one module per job: ``cache`` (WeightsCache: entries, their checks and
eviction, and the layout under the cache root), ``files`` (listings and the check of one file), ``locks``
(the OFD locks that keep an entry whole while it is written or used) and ``access`` (which namespaces the
Hub let in). Stdlib only; the Hub adapter is inference.weights.

Nothing is imported here, so the modules load only when used.
"""
