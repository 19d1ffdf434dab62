"""Emails with calendar files, reminders and the other background work, run through a
PostgreSQL job queue (procrastinate) so that it happens once across every instance and colour."""
