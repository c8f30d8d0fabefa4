"""The composition root: the app built from the parts (``app``), the process's one NOTIFY
listener (``listener``), housekeeping, the uvicorn server (``server``, ``header_timeout``)
and the embedded default's first minute (``demo``, ``devtoken``)."""
