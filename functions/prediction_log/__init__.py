"""The prediction log: a Trigger subscriber that stores every ``prediction.logged`` event, and
the query endpoint (and command) over what it stored."""
