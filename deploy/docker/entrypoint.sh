#!/bin/sh
# Container entrypoint of taatom-jobs.
#
#   entrypoint.sh worker [MODULE...] [dramatiq options]   # `dramatiq jobs`, the default
#   entrypoint.sh scheduler [options]                     # `python -m scheduler`
#   entrypoint.sh COMMAND [ARGS...]                        # anything else, run as given
#
# The program replaces this shell (exec), so the container's stop signal
# (SIGTERM) reaches it directly, once. Restarting is the orchestrator's job:
# run the container with a restart policy (see deploy/docker/compose.yml),
# because `dramatiq jobs` stops all its processes when one of them dies.
#
# Worker knobs (not application settings, which come from the environment or
# ENV_FILE as usual):
#   TAATOM_WORKER_PROCESSES      worker processes          (default 2)
#   TAATOM_WORKER_THREADS        threads per process       (default 5)
#   TAATOM_WORKER_SHUTDOWN_MS    grace for in-flight jobs on SIGTERM, in ms (default 60000);
#                                keep it below the container's stop timeout
set -eu

role="${1:-worker}"
[ "$#" -gt 0 ] && shift

case "$role" in
  worker)
    exec python -m dramatiq jobs "$@" \
      --processes "${TAATOM_WORKER_PROCESSES:-2}" \
      --threads "${TAATOM_WORKER_THREADS:-5}" \
      --worker-shutdown-timeout "${TAATOM_WORKER_SHUTDOWN_MS:-60000}"
    ;;
  scheduler)
    exec python -m scheduler "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
