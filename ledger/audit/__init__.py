"""Audit: an aggregate's history and state as of any moment, review decisions and the
findings an auditor should look at, and tamper evidence (hash chains and seals)."""
