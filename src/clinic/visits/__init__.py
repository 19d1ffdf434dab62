"""Video visits: the join window, the waiting room, signalling across instances, visit notes."""
