"""The clinic: a doctor–patient telehealth application."""
