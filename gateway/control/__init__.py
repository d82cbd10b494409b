"""The slow path: owns all mutation; reaches the data plane through TableHolder.swap() and the
ReplicaSets it publishes."""
