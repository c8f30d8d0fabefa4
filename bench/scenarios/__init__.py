"""The bench's scenarios; each ``run(ctx)`` returns a JSON-able dict for the report."""
