"""What both servers (the PostgREST shim in ``shim.http`` and the live room in
``shim.realtime``) need of the web, written once: the PostgREST-shaped error
(``errors``), the credential of a request (``token``), a body bounded in size and time
(``body``), the shared deadline sweep (``deadlines``) and the webinar-id rule (``ids``)."""
