"""eventlive-rpc: a Postgres-centric RPC layer with a thin PostgREST-compatible shim."""

__version__ = "0.1.0"
