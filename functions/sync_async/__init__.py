"""Sync-async proxy: the fast model answers now; the slow model's answer arrives as a job."""
