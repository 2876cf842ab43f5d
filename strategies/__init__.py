"""Strategy plug-ins (issue 5): causal target exposure from bars."""
