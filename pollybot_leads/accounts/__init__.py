"""Workspaces, chatbots and API keys: the repository, the auth middleware and the
admin commands that manage them."""
