"""The compile-cache init container's work on one namespace's compile claim (`modelcache-operator
compile-cache`): create the pod's key folder and evict least recently used ones over the size cap."""
