"""The generic predictor: serves whichever model card its environment names."""
