"""Blue/green deployments for the clinic: controller, supervisor, Envoy as data plane."""
