"""The pre-incident design, rebuilt faithfully for side-by-side figures (bench only).

``app``: the API function of the old front end: per call an auth-server lookup
(simulated as a delay, ``OLD_AUTH_DELAY_MS``) and separate queries, each its own
PostgREST-style transaction (BEGIN, role + claims, query, COMMIT) through psycopg_pool;
an INSERT that collides is passed to the client as 409. ``proxy``: the extra HTTP hop
(the serverless function in front). Tables in schema ``legacy`` (``schema.sql``).
Nothing in the product imports this package.
"""
