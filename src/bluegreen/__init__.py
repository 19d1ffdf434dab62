"""Blue/green deployment system: router, controller and supervisor for the clinic app."""
