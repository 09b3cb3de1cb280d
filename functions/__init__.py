"""ML-serving patterns as functions-framework functions: one folder per deployable role."""
