"""Microsoft: Graph, its sign-in authority (Entra ID) and the service's access to both."""
