"""Local stand-ins for what a Knative cluster provides; they read knative/ and eventing/."""
