"""``baton``: the operator's command line, a client of the coordinator and the agents, nothing more."""
