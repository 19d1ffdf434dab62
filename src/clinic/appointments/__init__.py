"""Booking, cancelling and rescheduling, with the no-overlap guarantee held by the database."""
