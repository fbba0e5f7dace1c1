"""modelcache-operator: LLM model caches for GPU serving on Kubernetes."""
