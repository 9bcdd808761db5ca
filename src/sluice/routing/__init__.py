"""Routing: the model catalog, and which routes serve a request, in which order."""
