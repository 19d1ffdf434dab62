"""Blue/green deployment system for the clinic app: controller, supervisor and the Envoy data plane."""
