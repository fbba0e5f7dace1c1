module modelcache.dev/benchmarks/noop_webhook

go 1.26
