"""keras-zoo models: the backbone catalog and resolver, task heads and export."""
