"""``eventlive verify``: the post-deploy checklist (DoD-1..4 and the rollback triggers),
answered against a live deployment in under a minute.

``run.verify(urls, dsn, secret, ...)`` scrapes every node's ``/metrics`` and ``/ready``
(``nodes``), reads the database's statistics, applies DoD-1..3 (``shim.console.verdicts``,
the same rules ``/status`` shows), runs the DoD-4 flows for real in a throwaway webinar
(``flows``) and returns a ``Report`` (``report``) whose ``exit_code`` is 0 all OK, 1 a
check failed, 2 could not check. ``command`` is its CLI. Importing this package is
cheap (the CLI reads the exit codes from here); the parts load when used.
"""

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_CHECK = 0, 1, 2
