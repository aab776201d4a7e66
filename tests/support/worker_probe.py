"""Imported by `dramatiq jobs tests.support.worker_probe`: adds the probe actor to the real broker."""

import jobs

from .probe import declare_probe

probe = declare_probe(jobs.broker)
