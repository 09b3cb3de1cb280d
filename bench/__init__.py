"""`make bench`: raw inference floors beside the same models served over loopback HTTP."""
