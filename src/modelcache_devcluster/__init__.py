"""A real local Kubernetes control plane for development and tests.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as plain processes on
127.0.0.1, built from Go modules by `hack/build-bins.sh` and cached under ~/.cache. kwok plays the
kubelet of fake GPU nodes so that pods run and Job pods succeed.
"""
