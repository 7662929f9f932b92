"""SynGen: self-generated instruction data (prompt, parse, filter, select)."""
