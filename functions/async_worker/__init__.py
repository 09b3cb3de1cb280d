"""Async worker: the Trigger subscriber running the slow model into the job store."""
