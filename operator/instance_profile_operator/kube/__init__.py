"""The Kubernetes edge: the writer (status, Events, reads), the admission webhook and leader
election."""
