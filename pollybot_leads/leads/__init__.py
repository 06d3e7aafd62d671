"""Leads: the routes, the batch and export endpoints, the rules, and the repository."""
