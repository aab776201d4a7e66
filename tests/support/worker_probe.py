"""Imported by `dramatiq jobs tests.support.worker_probe`: adds a probe actor per queue to the real broker."""

import jobs

from .probe import declare_all_probes

probes = declare_all_probes(jobs.broker)
