"""The attack suite: each reported attack reproduced against real servers on loopback."""
