"""One attack per finding of the security review (issue 19), through the public surface."""
