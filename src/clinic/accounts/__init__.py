"""Patients, doctors and admins: registration, login, roles, API tokens."""
