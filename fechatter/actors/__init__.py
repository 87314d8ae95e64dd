"""Actor core: ChatActors (one writer per chat), UserActors (one per online user)."""
