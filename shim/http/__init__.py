"""The PostgREST-compatible HTTP shim: verify the JWT, bind the arguments, call the SQL
function in one pipelined round trip, answer like PostgREST (``create_app``)."""
