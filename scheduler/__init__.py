"""The schedule daemon: enqueues taatom-jobs' periodic jobs, each window exactly once across replicas.

It only enqueues; it never runs job logic. See docs/scheduler.md.
"""
