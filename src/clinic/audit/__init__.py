"""Who read or changed which patient's data, and when: an append-only trail in the database."""
