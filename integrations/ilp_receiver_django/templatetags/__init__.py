"""Template tags of the Django adapter (``{% load ilp_receiver %}``)."""
